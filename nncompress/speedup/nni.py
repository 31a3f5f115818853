"""NNI-compatible facade: ``ModelSpeedup(model, dummy_input, masks).speedup_model()``."""

from __future__ import annotations

import types
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import fx, nn

from nncompress.errors import SpeedupError
from nncompress.speedup.api import speedup
from nncompress.speedup.masks import load_masks
from nncompress.speedup.result import SpeedupResult


class ModelSpeedup:
    """Drop-in for ``nni.compression.speedup.ModelSpeedup``.

    Like NNI, ``speedup_model()`` shrinks ``model`` in place and returns that same object. Unlike NNI, the
    result is verified against the masked model and the call fails with a VerificationError instead of
    returning a model that computes something else, and a model that ends up no smaller raises a
    ``UserWarning`` naming the layers that blocked it (``self.result.blocked_by``).

    When the forward hard-codes a shape that pruning changed (``x.view(-1, 800)``), the corrected forward
    comes from a torch.fx trace: ``model.forward`` becomes that trace's generated code bound to ``model``
    (an instance attribute, so the class and every other instance are untouched). Such a model saves
    and reloads through its ``state_dict`` (or the artifact manifest), not by pickling the object.

    Args:
        model: the model the masks were computed for.
        dummy_input: an input the model accepts (tensor or tuple of positional tensors).
        masks_or_file: ``{module_name: {param_name: mask}}`` or a ``torch.save`` file of it (loaded with
            ``weights_only=True``).
        map_location: device the masks file is loaded onto (as in NNI).
        batch_dim: accepted for NNI call compatibility; must be 0 (inputs are batched on dimension 0).
        confidence: accepted for NNI 2.x call compatibility; unused, since masks are not propagated by
            sampling here (removal follows the dependency graph and is then verified).
        batch_size: accepted for NNI 3.x call compatibility; unused for the same reason.
        rtol: relative verification tolerance.
        atol: absolute verification tolerance.
        verify: set False to skip the equivalence check (not recommended).
    """

    def __init__(
        self,
        model: nn.Module,
        dummy_input: torch.Tensor | Sequence[torch.Tensor],
        masks_or_file: Mapping[str, Mapping[str, torch.Tensor]] | str | Path,
        map_location: str | torch.device | None = None,
        batch_dim: int = 0,
        confidence: int | None = None,
        batch_size: int | None = None,
        *,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        verify: bool = True,
    ) -> None:
        if batch_dim != 0:
            raise SpeedupError(f"batch_dim={batch_dim} is not supported; inputs must be batched on dim 0")
        self.model = model
        self.dummy_input = dummy_input
        self.masks = load_masks(masks_or_file)
        if map_location is not None:
            self.masks = {n: {p: m.to(map_location) for p, m in ps.items()} for n, ps in self.masks.items()}
        self.rtol = rtol
        self.atol = atol
        self.verify = verify
        self.result: SpeedupResult | None = None

    def speedup_model(self) -> nn.Module:
        """Shrinks the model (in place where possible) and returns it.

        Returns:
            The shrunk model: ``self.model`` itself, or a GraphModule when shape constants were rewritten.
        """
        self.result = speedup(
            self.model, self.masks, self.dummy_input, verify=self.verify, rtol=self.rtol, atol=self.atol
        )
        result = self.result
        if not result.smaller:
            warnings.warn(
                f"speedup removed no parameter from {type(self.model).__name__}: "
                + ("; ".join(result.blocked_by) or "the masks empty no whole channel"),
                UserWarning,
                stacklevel=2,
            )
        shrunk = result.model
        if isinstance(shrunk, fx.GraphModule) and not isinstance(self.model, fx.GraphModule):
            _adopt_graph(self.model, shrunk)
            return self.model
        # Adopt the shrunk copy's state so references the caller holds to `model` see the smaller model,
        # which is what NNI users rely on.
        self.model.__dict__.update(shrunk.__dict__)
        return self.model


def _adopt_graph(model: nn.Module, gm: fx.GraphModule) -> None:
    """Makes ``model`` the shrunk model that ``gm`` (a rewritten trace of a pruned copy) describes.

    The trace shares its layers with the pruned copy, and those layers sit at the same qualified names
    as in ``model``: each one replaces its counterpart, then the trace's forward is bound to ``model``.
    """
    was_training = gm.training
    for name, layer in gm.named_modules():
        if not name or any(True for _ in layer.children()):
            continue  # containers are rebuilt by fx; their leaves carry the state
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        if isinstance(owner, nn.Module) and hasattr(owner, attr):
            owner._modules[attr] = layer
    for node in gm.graph.nodes:
        # Tensors the trace captured as constants on its root (fx names them _tensor_constant*).
        if node.op == "get_attr" and "." not in str(node.target) and not hasattr(model, str(node.target)):
            setattr(model, str(node.target), getattr(gm, str(node.target)))
    model.forward = types.MethodType(type(gm).forward, model)  # type: ignore[method-assign]
    model.train(was_training)
