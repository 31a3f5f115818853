"""Checks a job runs on the compressed model: output equivalence and accuracy on labelled data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
from torch import nn

from nncompress.errors import ConfigError, VerificationError
from nncompress.finetune.evaluate import score_batches

__all__ = ["EvalData", "builtin_dataset", "output_tensors", "top1_accuracy", "verify_outputs"]

EvalData = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def verify_outputs(
    masked: nn.Module, compressed: nn.Module, example: torch.Tensor, *, seed: int
) -> dict[str, Any]:
    """Checks that ``compressed`` computes what ``masked`` computes, on the example and two random batches.

    Args:
        masked: the model with the masks multiplied in (the reference).
        compressed: the model that will be saved (shrunk, or the masked model itself).
        example: the job's example input; random batches of 4 like it are drawn with ``seed``.
        seed: seeds the random batches.

    Returns:
        ``max_abs_diff``, ``output_scale`` (largest reference magnitude), inputs compared, tolerances.

    Raises:
        VerificationError: a shape differs, or a difference exceeds ``1e-4 × scale + 1e-5``.
    """
    # The example plus random batches of 4: a speedup that only works at batch 1, or only on the
    # example's values, is caught here.
    generator = torch.Generator().manual_seed(seed + 1)
    batches = [example]
    for _ in range(2):
        if example.dtype.is_floating_point:
            batches.append(torch.randn((4, *example.shape[1:]), generator=generator, dtype=example.dtype))
        else:
            high = int(example.max()) + 1
            batches.append(torch.randint(0, max(high, 2), (4, *example.shape[1:]), generator=generator))
    worst, scale = 0.0, 0.0
    with torch.inference_mode():
        for batch in batches:
            refs, gots = output_tensors(masked(batch)), output_tensors(compressed(batch))
            if len(refs) != len(gots):
                raise VerificationError(
                    f"the compressed model returns {len(gots)} tensors, the masked model {len(refs)}"
                )
            for index, (ref, got) in enumerate(zip(refs, gots, strict=True)):
                if ref.shape != got.shape:
                    raise VerificationError(
                        f"output {index} of the compressed model has shape {list(got.shape)}, "
                        f"the masked model's {list(ref.shape)}",
                        output=index,
                        batch_shape=list(batch.shape),
                    )
                if ref.numel():
                    worst = max(worst, float((ref.double() - got.double()).abs().max()))
                    scale = max(scale, float(ref.double().abs().max()))
    rtol, atol = 1e-4, 1e-5
    if worst > rtol * scale + atol:
        raise VerificationError(
            f"the compressed model differs from the masked model by {worst:.3g} on outputs of magnitude "
            f"{scale:.3g} (allowed {rtol * scale + atol:.3g})",
            max_abs_diff=worst,
        )
    return {"max_abs_diff": worst, "output_scale": scale, "inputs": len(batches), "rtol": rtol, "atol": atol}


def output_tensors(out: object) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor, or tuples/lists/dicts of them), in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in output_tensors(item)]
    if isinstance(out, Mapping):
        return [t for key in sorted(out, key=str) for t in output_tensors(out[key])]
    raise VerificationError(f"cannot compare a model output of type {type(out).__name__}")


def builtin_dataset(
    name: str, example: torch.Tensor
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]:
    """Loads a shipped data set as pruner batches and as one labelled evaluation set.

    Raises:
        ConfigError: the data set's inputs do not have the shape of the model's example input.
    """
    from nncompress.data import load_mnist_subset

    images, labels = load_mnist_subset()
    if tuple(example.shape[1:]) != tuple(images.shape[1:]):
        raise ConfigError(
            f"data set {name} holds inputs of shape {list(images.shape[1:])}, "
            f"but the model takes {list(example.shape[1:])}",
            key="dataset",
        )
    # Batches of 64: small enough for activation statistics on a laptop, 16 of them over 1,000 images.
    batches = [(images[i : i + 64], labels[i : i + 64]) for i in range(0, len(images), 64)]
    return batches, (images, labels)


def top1_accuracy(model: nn.Module, eval_data: EvalData) -> float:
    """Fraction of examples whose arg-max output equals the label (``(x, y)`` or batches of them)."""
    single = isinstance(eval_data, tuple) and isinstance(eval_data[0], torch.Tensor)
    batches = cast(Iterable[tuple[torch.Tensor, torch.Tensor]], [eval_data] if single else eval_data)
    try:
        return score_batches(model, batches).top1
    except ValueError:
        raise ConfigError("eval_data holds no examples", key="eval_data") from None
