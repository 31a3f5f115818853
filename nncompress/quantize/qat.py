"""Quantization-aware training: fake quantization on the selected layers while a caller's loop trains.

Weights are fake-quantized through ``torch.nn.utils.parametrize`` (never by patching ``forward``) on the
exact grid onnxruntime's quantizer uses later (int8 symmetric: ``scale = absmax / 127``, levels
-127..127; otherwise min/max over ``qmin..qmax``), with a straight-through gradient. Inputs and outputs
are fake-quantized by forward hooks with moving-average min/max observers. When training ends the
weights are left *on* the grid, so the int8 conversion re-quantizes them without further rounding
error; for per-channel symmetric weights that holds even after BatchNorm folding, which scales each
output channel (and so its scale) by one constant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

from nncompress.quantize.resolve import LayerQuant, TensorQuant

__all__ = ["FakeQuantWeight", "QatSession", "prepare_qat"]


def qrange(setting: TensorQuant) -> tuple[int, int]:
    """The integer levels onnxruntime uses: int8 symmetric is -127..127, otherwise the full range."""
    if setting.dtype == "int8":
        return (-127, 127) if setting.scheme == "symmetric" else (-128, 127)
    return 0, 255


class FakeQuantWeight(nn.Module):
    """A parametrization that rounds a weight to its int8 grid (straight-through gradient).

    Args:
        setting: dtype, scheme and per-channel choice of the weight.
    """

    def __init__(self, setting: TensorQuant) -> None:
        super().__init__()
        self.setting = setting
        self.qmin, self.qmax = qrange(setting)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        w = weight.detach()
        dims = tuple(range(1, w.dim())) if self.setting.per_channel else tuple(range(w.dim()))
        lo = torch.amin(w, dim=dims) if dims else w
        hi = torch.amax(w, dim=dims) if dims else w
        lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # zero must be exactly representable
        if self.setting.scheme == "symmetric":
            absmax = torch.maximum(-lo, hi)
            scale = 2 * absmax / (self.qmax - self.qmin)
            zero = torch.full_like(scale, (self.qmin + self.qmax + 1) // 2, dtype=torch.int32)
        else:
            scale = (hi - lo) / (self.qmax - self.qmin)
            zero = torch.round(self.qmin - lo / torch.clamp(scale, min=1e-12)).to(torch.int32)
        scale = torch.clamp(scale, min=1e-12).float()
        if self.setting.per_channel:
            return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, self.qmin, self.qmax)
        return torch.fake_quantize_per_tensor_affine(weight, float(scale), int(zero), self.qmin, self.qmax)


@dataclass
class QatSession:
    """Fake quantization attached to a model; :meth:`finish` takes it off again.

    Attributes:
        model: the model being trained (modified in place).
        observers: per layer, the input and output fake-quantizers (their ranges are inspectable).
    """

    model: nn.Module
    observers: dict[str, tuple[FakeQuantize, FakeQuantize]] = field(default_factory=dict)
    _hooks: list[RemovableHandle] = field(default_factory=list)
    _parametrized: list[nn.Module] = field(default_factory=list)

    def finish(self) -> nn.Module:
        """Removes hooks and parametrizations, leaving each weight on its int8 grid; returns the model."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for module in self._parametrized:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        self._parametrized.clear()
        return self.model


def prepare_qat(model: nn.Module, layers: dict[str, LayerQuant]) -> QatSession:
    """Inserts fake quantization for the resolved layers of ``model`` (in place).

    Args:
        model: the float model to train.
        layers: resolved settings (mode ``'qat'``) from
            :func:`~nncompress.quantize.resolve.resolve_quant_config`.

    Returns:
        A :class:`QatSession`; call ``finish()`` after training.
    """
    session = QatSession(model=model)
    modules = dict(model.named_modules())
    for name, layer in layers.items():
        module = modules[name]
        parametrize.register_parametrization(module, "weight", FakeQuantWeight(layer.weight))
        session._parametrized.append(module)
        if layer.activation is None:
            continue
        fq_in, fq_out = _activation_fake_quant(layer.activation), _activation_fake_quant(layer.activation)
        session.observers[name] = (fq_in, fq_out)
        session._hooks.append(module.register_forward_pre_hook(_pre_hook(fq_in)))
        session._hooks.append(module.register_forward_hook(_post_hook(fq_out)))
    return session


def _activation_fake_quant(setting: TensorQuant) -> FakeQuantize:
    qmin, qmax = qrange(setting)
    dtype = torch.qint8 if setting.dtype == "int8" else torch.quint8
    scheme = torch.per_tensor_symmetric if setting.scheme == "symmetric" else torch.per_tensor_affine
    return FakeQuantize(
        observer=MovingAverageMinMaxObserver, quant_min=qmin, quant_max=qmax, dtype=dtype, qscheme=scheme
    )


def _pre_hook(fq: FakeQuantize) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]:
    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (fq(args[0]), *args[1:])

    return hook


def _post_hook(fq: FakeQuantize) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
    def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> torch.Tensor:
        return fq(output)

    return hook
