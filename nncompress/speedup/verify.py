"""Equivalence check: the shrunk model must compute what the masked model computes.

Outputs are compared with a tolerance relative to the reference's scale (``atol + rtol * max|ref|``):
removing zero channels only changes the order of floating-point sums, which stays far inside that bound,
while a wrongly removed channel or a mis-wired shape shows up orders of magnitude above it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from nncompress.errors import VerificationError

Inputs = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class VerificationReport:
    """What was compared and how close it was.

    Attributes:
        passed: every output matched within tolerance.
        num_inputs: input batches compared (the dummy input and random ones).
        batch_sizes: batch size of each compared input.
        max_abs_diff: largest absolute difference over all outputs.
        max_rel_diff: ``max_abs_diff`` divided by the largest reference magnitude.
        rtol: relative tolerance used.
        atol: absolute tolerance used.
    """

    passed: bool
    num_inputs: int
    batch_sizes: list[int] = field(default_factory=list)
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    rtol: float = 1e-4
    atol: float = 1e-5

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def normalize_inputs(example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> Inputs:
    """Positional inputs as a tuple (a single tensor becomes a 1-tuple)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def random_like(inputs: Inputs, *, batch_scale: int = 1, generator: torch.Generator) -> Inputs:
    """Random inputs shaped like ``inputs`` (batch multiplied by ``batch_scale``).

    Float tensors get normal noise; integer tensors (token ids) get values in the range seen in the
    dummy input, so an embedding lookup stays in its vocabulary.
    """
    out = []
    for x in inputs:
        shape = (x.shape[0] * batch_scale, *x.shape[1:]) if x.dim() else x.shape
        if x.is_floating_point():
            out.append(torch.randn(shape, generator=generator, dtype=x.dtype).to(x.device))
        else:
            high = max(int(x.max()) + 1, 1) if x.numel() else 1
            out.append(torch.randint(0, high, shape, generator=generator, dtype=x.dtype).to(x.device))
    return tuple(out)


def verification_inputs(inputs: Inputs, *, num_random: int = 2, seed: int = 0) -> list[Inputs]:
    """The dummy input, then ``num_random`` random batches; the last has twice the batch size.

    A different batch size is what exposes a hard-coded batch dimension (``view(-1, 800)`` silently folding
    two samples into one row), so at least one input must not share the dummy's batch size.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = [inputs]
    for i in range(num_random):
        batches.append(random_like(inputs, batch_scale=2 if i == num_random - 1 else 1, generator=generator))
    return batches


def _tensors(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for v in output.values() for t in _tensors(v)]
    if isinstance(output, list | tuple):
        return [t for v in output for t in _tensors(v)]
    return []


def _compare(ref: object, got: object) -> tuple[float, float, str | None]:
    """Max abs diff, scale, and a reason when the outputs cannot even be compared."""
    ref_t, got_t = _tensors(ref), _tensors(got)
    if len(ref_t) != len(got_t):
        return float("inf"), 1.0, f"{len(got_t)} output tensors instead of {len(ref_t)}"
    worst, scale = 0.0, 0.0
    for r, g in zip(ref_t, got_t, strict=True):
        if r.shape != g.shape:
            return float("inf"), 1.0, f"output shape {tuple(g.shape)} instead of {tuple(r.shape)}"
        if r.numel():
            diff = (r.double() - g.double()).abs().max().item()
            worst = max(worst, diff if diff == diff else float("inf"))  # NaN counts as a failure
            scale = max(scale, r.double().abs().max().item())
    return worst, scale, None


def output_shapes(outputs: list[object]) -> list[list[tuple[int, ...]]]:
    """Shapes of every tensor in each output (for comparing structure without values)."""
    return [[tuple(t.shape) for t in _tensors(out)] for out in outputs]


@torch.inference_mode()
def verify_equivalence(
    masked_model: nn.Module,
    shrunk_model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    num_random: int = 2,
    seed: int = 0,
    kept: dict[str, dict[str, list[int]]] | None = None,
) -> VerificationReport:
    """Checks that ``shrunk_model`` computes what ``masked_model`` computes.

    Both models are compared in their current mode; call ``.eval()`` first when they hold dropout.

    Args:
        masked_model: the model with masks multiplied into its weights (the reference).
        shrunk_model: the physically smaller model.
        inputs: the dummy input (a tensor or a tuple of positional tensors).
        rtol: allowed difference relative to the largest reference output magnitude.
        atol: allowed absolute difference on top of that.
        num_random: random batches compared besides the dummy input (fixed ``seed``; the last one has
            twice the dummy's batch size).
        seed: seed of the random inputs.
        kept: kept channel indices per layer (``SpeedupResult.kept``), so that on failure pruned layers
            are compared on their surviving channels.

    Returns:
        A passing :class:`VerificationReport`.

    Raises:
        VerificationError: naming the first divergent layer, the difference and the input that showed it,
            or the operation at which the shrunk model crashes.
    """
    batches = verification_inputs(normalize_inputs(inputs), num_random=num_random, seed=seed)
    reference = [masked_model(*batch) for batch in batches]
    outputs = []
    for batch in batches:
        try:
            outputs.append(shrunk_model(*batch))
        except Exception as exc:
            from nncompress.speedup.diagnose import forward_failure

            raise forward_failure(shrunk_model, batch, exc) from exc
    return check_outputs(
        batches, reference, outputs, lambda: masked_model, shrunk_model, rtol=rtol, atol=atol, kept=kept or {}
    )


def check_outputs(
    batches: list[Inputs],
    reference: list[object],
    outputs: list[object],
    masked_model: Callable[[], nn.Module],
    shrunk_model: nn.Module,
    *,
    rtol: float,
    atol: float,
    kept: dict[str, dict[str, list[int]]],
) -> VerificationReport:
    """Compares precomputed outputs; on failure builds the masked model to find the divergent layer.

    Args:
        batches: the inputs compared.
        reference: masked-model outputs, one per batch.
        outputs: shrunk-model outputs, one per batch.
        masked_model: returns the masked model (only called on failure, for the per-layer diagnosis).
        shrunk_model: the shrunk model.
        rtol: tolerance relative to the largest reference magnitude.
        atol: absolute tolerance added to it.
        kept: kept indices per layer, for comparing pruned layers on their surviving channels.

    Returns:
        A passing :class:`VerificationReport`.

    Raises:
        VerificationError: on the first batch that differs.
    """
    worst, worst_rel = 0.0, 0.0
    for index, (batch, ref, got) in enumerate(zip(batches, reference, outputs, strict=True)):
        diff, scale, mismatch = _compare(ref, got)
        allowed = atol + rtol * scale
        if mismatch is not None or diff > allowed:
            layer = first_divergent_layer(
                masked_model(), shrunk_model, batch, rtol=rtol, atol=atol, kept=kept
            )
            where = (
                f"first divergent layer: {layer[0]!r} (max abs diff {layer[1]:.3g}, "
                f"{layer[2]:.3g} of its output scale)"
                if layer
                else "no single layer diverges beyond tolerance; the difference comes from ops between layers"
            )
            what = mismatch or f"max abs diff {diff:.3g} > allowed {allowed:.3g} (output scale {scale:.3g})"
            raise VerificationError(
                f"shrunk model differs from the masked model on input #{index} "
                f"(batch {_batch_size(batch)}): {what}; {where}",
                input_index=index,
                max_abs_diff=diff,
                allowed=allowed,
                layer=layer[0] if layer else None,
            )
        worst = max(worst, diff)
        worst_rel = max(worst_rel, diff / scale if scale else diff)
    sizes = [_batch_size(b) for b in batches]
    return VerificationReport(True, len(batches), sizes, worst, worst_rel, rtol, atol)


def _batch_size(batch: Inputs) -> int:
    return int(batch[0].shape[0]) if batch and batch[0].dim() else 1


def _record(model: nn.Module) -> tuple[dict[str, object], list[str], Callable[[], None]]:
    outputs: dict[str, object] = {}
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
            if name not in outputs:
                order.append(name)
            outputs[name] = out

        handles.append(module.register_forward_hook(hook))

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return outputs, order, remove


def _align(ref: torch.Tensor, got: torch.Tensor, kept_out: list[int] | None) -> torch.Tensor | None:
    """The reference restricted to the surviving channels, when the shapes differ only by the pruning."""
    if ref.shape == got.shape:
        return ref
    if kept_out is None or ref.dim() != got.dim():
        return None
    differing = [d for d in range(ref.dim()) if ref.shape[d] != got.shape[d]]
    if len(differing) != 1 or got.shape[differing[0]] != len(kept_out):
        return None
    return ref.index_select(differing[0], torch.as_tensor(kept_out, device=ref.device))


@torch.inference_mode()
def first_divergent_layer(
    masked_model: nn.Module,
    shrunk_model: nn.Module,
    batch: Inputs,
    *,
    rtol: float,
    atol: float,
    kept: dict[str, dict[str, list[int]]],
) -> tuple[str, float, float] | None:
    """Runs both models with hooks and returns the first layer (execution order) whose outputs diverge.

    Pruned layers are compared on their kept output channels.

    Returns:
        ``(layer name, max abs diff, max abs diff / max |reference|)``, or None when no layer diverges.
    """
    ref_out, order, remove_ref = _record(masked_model)
    got_out, _, remove_got = _record(shrunk_model)
    try:
        masked_model(*batch)
        # The layers that ran before a crash are still worth comparing.
        with contextlib.suppress(Exception):
            shrunk_model(*batch)
    finally:
        remove_ref()
        remove_got()
    for name in order:
        if name not in got_out:
            continue
        refs, gots = _tensors(ref_out[name]), _tensors(got_out[name])
        if len(refs) != len(gots) or not refs:
            continue
        ref, got = refs[0], gots[0]
        aligned = _align(ref, got, kept.get(name, {}).get("out"))
        if aligned is None or not aligned.is_floating_point():
            continue
        diff = (aligned.double() - got.double()).abs().max().item() if got.numel() else 0.0
        scale = aligned.double().abs().max().item() if got.numel() else 0.0
        if diff != diff or diff > atol + rtol * scale:
            return name, diff, diff / scale if scale else float("inf")
    return None
