"""``quantize``: a float model in, a real int8 ONNX model (and optionally PyTorch's own) out."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from nncompress.quantize.export import export_for_quantization
from nncompress.quantize.measure import QuantMetrics, measure_quantized
from nncompress.quantize.ort_backend import quantize_graph, uniform_settings
from nncompress.quantize.qat import prepare_qat
from nncompress.quantize.resolve import LayerQuant, resolve_quant_config
from nncompress.quantize.spec import QuantSpec

__all__ = ["LayerReport", "QuantResult", "plan_quantization", "quantize"]

Inputs = torch.Tensor | Sequence[torch.Tensor]


@dataclass(frozen=True)
class LayerReport:
    """What happened to one selected layer, read back from the int8 file (not from the config).

    Attributes:
        name: module name.
        op_type: module class name.
        onnx_nodes: the nodes it became in the fp32 graph.
        quantized: every weight of the layer is stored as an 8-bit integer in the int8 file.
        weight_dtype: the stored weight type (``'int8'``/``'uint8'``), or ``'float32'`` when left float.
        per_channel: the weight has one scale per output channel.
        fp32_weight_bytes: bytes of its weights in the fp32 graph.
        int8_weight_bytes: bytes of its quantized weights, scales and zero points in the int8 graph.
        settings: the resolved settings that were asked for.
    """

    name: str
    op_type: str
    onnx_nodes: tuple[str, ...]
    quantized: bool
    weight_dtype: str
    per_channel: bool
    fp32_weight_bytes: int
    int8_weight_bytes: int
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view."""
        out = dict(vars(self))
        out["onnx_nodes"] = list(self.onnx_nodes)
        return out


@dataclass(frozen=True)
class QuantResult:
    """The artifacts of one quantization run and what they contain.

    Attributes:
        onnx_path: the int8 ONNX model (run it with :func:`~nncompress.quantize.load_quantized`).
        fp32_onnx_path: the fp32 ONNX graph it was quantized from (the latency baseline).
        torch_path: PyTorch's own int8 model (TorchScript), when asked for and possible.
        torch_error: why PyTorch's int8 model could not be written, when asked for and not possible.
        spec: the spec that was run.
        exporter: which ONNX exporter wrote the fp32 graph.
        bytes: ``{'fp32_onnx': n, 'int8_onnx': n[, 'torch_int8': n]}`` file sizes.
        layers: per selected layer, what the int8 file holds.
        calibration_batches_used: batches read for calibration (0 for dynamic mode).
        float_layers: layers with weights that stay float (not selected, or of a type the mode
            cannot quantize), so a report shows what was left out as well as what was quantized.
        fidelity: int8 vs fp32 on the example inputs (a first sanity figure; ``measure`` gives accuracy):
            ``{'examples': n, 'top1_agreement': f, 'max_abs_error': f, 'fp32_max_abs': f}``.
    """

    onnx_path: Path
    fp32_onnx_path: Path
    spec: QuantSpec
    exporter: str
    bytes: dict[str, int]
    layers: tuple[LayerReport, ...]
    calibration_batches_used: int
    fidelity: dict[str, float]
    float_layers: tuple[str, ...] = ()
    torch_path: Path | None = None
    torch_error: str | None = None
    _model: nn.Module | None = field(default=None, repr=False, compare=False)
    _example: tuple[torch.Tensor, ...] = field(default=(), repr=False, compare=False)

    @property
    def quantized_layers(self) -> list[str]:
        """Names of the layers whose weights really are 8-bit in the int8 file."""
        return [layer.name for layer in self.layers if layer.quantized]

    def measure(
        self,
        data: Iterable[Any] | None = None,
        *,
        example_inputs: Inputs | None = None,
        batch_sizes: Sequence[int] = (1, 64),
        runs: int = 20,
        threads: int | None = None,
    ) -> QuantMetrics:
        """Latency (medians, fp32 and int8 in the same run), bytes, and accuracy when ``data`` is given.

        Args:
            data: labelled batches ``(inputs..., labels)``; ``None`` skips accuracy.
            example_inputs: what to tile for timing (default: the inputs given to :func:`quantize`).
            batch_sizes: batch sizes to time.
            runs: timed passes per model and batch size.
            threads: intra-op threads (``None``: torch's current setting).

        Returns:
            The measurements (see :class:`~nncompress.quantize.measure.QuantMetrics`); PyTorch's
            int8 model is timed too when it was written.
        """
        inputs = example_inputs if example_inputs is not None else self._example
        return measure_quantized(
            self._model,
            self.fp32_onnx_path,
            self.onnx_path,
            inputs,
            data=data,
            batch_sizes=batch_sizes,
            runs=runs,
            threads=threads,
            torch_int8=self.torch_path,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary for a job report."""
        return {
            "onnx_path": str(self.onnx_path),
            "fp32_onnx_path": str(self.fp32_onnx_path),
            "torch_path": None if self.torch_path is None else str(self.torch_path),
            "torch_error": self.torch_error,
            "spec": self.spec.to_dict(),
            "exporter": self.exporter,
            "bytes": dict(self.bytes),
            "layers": [layer.to_dict() for layer in self.layers],
            "calibration_batches_used": self.calibration_batches_used,
            "fidelity": dict(self.fidelity),
            "float_layers": list(self.float_layers),
        }


def plan_quantization(model: nn.Module, spec: QuantSpec | Mapping[str, Any]) -> dict[str, LayerQuant]:
    """Validates a spec against a model without exporting or running anything (milliseconds).

    This is what a service checks when a job is submitted, so a bad config is refused up front.

    Args:
        model: the model the config's layer names refer to.
        spec: a :class:`QuantSpec` or its dict form.

    Returns:
        Layer name -> the settings it will be quantized with, in module order.

    Raises:
        QuantConfigError: the same errors :func:`quantize` would raise for the spec and model.
    """
    spec = spec if isinstance(spec, QuantSpec) else QuantSpec.from_dict(spec)
    layers = resolve_quant_config(model, spec.config_list, spec.mode)
    uniform_settings(layers, mixed_weights=spec.mode != "dynamic" and spec.format == "qdq")
    return layers


def quantize(
    model: nn.Module,
    example_inputs: Inputs,
    spec: QuantSpec | Mapping[str, Any] | None = None,
    *,
    calibration: Iterable[Any] | None = None,
    train_fn: Callable[[nn.Module], None] | None = None,
    out_dir: str | Path,
    name: str = "model",
) -> QuantResult:
    """Quantizes ``model`` to int8 and writes the artifacts to ``out_dir``.

    The caller's model is never modified: QAT trains a copy.

    Args:
        model: the float model (possibly pruned and sped up).
        example_inputs: one input tensor or a sequence of them, batch first (used for the export).
        spec: a :class:`QuantSpec` or its dict form (default: static int8 on every quantizable layer).
        calibration: batches of inputs, e.g. a DataLoader of ``(x, y)`` (labels are ignored); static
            and QAT read at most ``spec.calibration_batches`` of them.
        train_fn: QAT only: ``train_fn(model) -> None`` fine-tunes the fake-quantized model in place.
        out_dir: folder for ``<name>.int8.onnx``, ``<name>.fp32.onnx`` (and ``<name>.int8.torchscript.pt``).
        name: file name stem.

    Returns:
        A :class:`QuantResult`; ``result.measure(data)`` times and evaluates it.

    Raises:
        QuantConfigError: the spec does not fit the model (unknown layers named with the nearest real
            ones, unsupported types, mixed settings, missing calibration or train_fn).
        QuantizationExportError: the model cannot be exported to ONNX.

    Examples:
        >>> spec = QuantSpec.from_dict({"mode": "static", "config_list": [{"op_types": ["default"]}]})
        >>> result = quantize(net, torch.randn(1, 1, 28, 28), spec, calibration=loader, out_dir="out")
        >>> result.measure(test_loader).speedup[64]
    """
    from nncompress.quantize.config import QuantConfigError

    spec = spec if isinstance(spec, QuantSpec) else QuantSpec.from_dict(spec or {})
    layers = plan_quantization(model, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)

    if spec.mode == "qat":
        if train_fn is None:
            raise QuantConfigError(
                "train_fn: mode 'qat' needs a training function train_fn(model) -> None that fine-tunes the "
                "fake-quantized model",
                key="train_fn",
                expected="a callable taking the model",
            )
        model = copy.deepcopy(model)
        session = prepare_qat(model, layers)
        model.train()
        train_fn(model)
        session.finish()
    elif train_fn is not None:
        raise QuantConfigError(
            f"train_fn: only mode 'qat' trains; mode {spec.mode!r} does not take a train_fn",
            key="train_fn",
            expected="None",
        )
    model.eval()

    fp32_path = out / f"{name}.fp32.onnx"
    int8_path = out / f"{name}.int8.onnx"
    graph = export_for_quantization(model, inputs, fp32_path)
    info = quantize_graph(
        graph,
        layers,
        mode=spec.mode,
        quant_format=spec.format,
        out_path=int8_path,
        calibration=calibration,
        calibration_batches=spec.calibration_batches,
    )
    reports = _layer_reports(int8_path, layers, info["onnx_nodes"], info["weights"])
    sizes = {"fp32_onnx": fp32_path.stat().st_size, "int8_onnx": int8_path.stat().st_size}

    torch_path: Path | None = None
    torch_error: str | None = None
    if spec.torch_artifact:
        from nncompress.quantize.torch_backend import torch_int8

        torch_path, torch_error = torch_int8(
            model,
            inputs,
            layers,
            mode=spec.mode,
            calibration=calibration,
            calibration_batches=spec.calibration_batches,
            path=out / f"{name}.int8.torchscript.pt",
        )
        if torch_path is not None:
            sizes["torch_int8"] = torch_path.stat().st_size
    return QuantResult(
        onnx_path=int8_path,
        fp32_onnx_path=fp32_path,
        spec=spec,
        exporter=graph.exporter,
        bytes=sizes,
        layers=reports,
        calibration_batches_used=info["calibration_batches_used"],
        fidelity=_fidelity(model, int8_path, inputs),
        float_layers=tuple(
            n for n, m in model.named_modules() if n and n not in layers and _has_own_weight(m)
        ),
        torch_path=torch_path,
        torch_error=torch_error,
        _model=model,
        _example=inputs,
    )


def _has_own_weight(module: nn.Module) -> bool:
    # Normalisation layers are folded or kept float by design; list the layers a user would quantize.
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        return False
    return any(isinstance(p, torch.Tensor) for p in module.parameters(recurse=False))


def _fidelity(model: nn.Module, int8_path: Path, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """How far the int8 model's first output is from fp32's on the example inputs."""
    from nncompress.quantize.session import OnnxModel

    with torch.inference_mode():
        ref = model(*inputs)
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).float()
    got = torch.from_numpy(OnnxModel(int8_path, threads=1).run(*inputs)[0]).float()
    agreement = float((ref.argmax(-1) == got.argmax(-1)).float().mean()) if ref.dim() > 1 else 1.0
    return {
        "examples": int(ref.shape[0]) if ref.dim() else 1,
        "top1_agreement": agreement,
        "max_abs_error": float((ref - got).abs().max()),
        "fp32_max_abs": float(ref.abs().max()),
    }


def _layer_reports(
    int8_path: Path,
    layers: dict[str, LayerQuant],
    nodes: dict[str, list[str]],
    weights: dict[str, dict[str, int]],
) -> tuple[LayerReport, ...]:
    # onnxruntime names a quantized initializer X as X_quantized, with X_scale and X_zero_point.
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(int8_path)).graph.initializer}
    reports = []
    for name, layer in layers.items():
        fp32_bytes = sum(weights.get(name, {}).values())
        int8_bytes = 0
        dtypes: set[str] = set()
        per_channel = True
        quantized = bool(weights.get(name))
        for weight in weights.get(name, {}):
            q = inits.get(f"{weight}_quantized")
            if q is None or q.dtype.itemsize != 1:
                quantized = False
                continue
            scale = inits.get(f"{weight}_scale")
            zero = inits.get(f"{weight}_zero_point")
            int8_bytes += (
                q.nbytes
                + (scale.nbytes if scale is not None else 0)
                + (zero.nbytes if zero is not None else 0)
            )
            dtypes.add(str(q.dtype))
            per_channel &= scale is not None and scale.size > 1
        reports.append(
            LayerReport(
                name=name,
                op_type=layer.op_type,
                onnx_nodes=tuple(nodes.get(name, ())),
                quantized=quantized,
                weight_dtype=dtypes.pop() if quantized and len(dtypes) == 1 else "float32",
                per_channel=quantized and per_channel,
                fp32_weight_bytes=fp32_bytes,
                int8_weight_bytes=int8_bytes if quantized else fp32_bytes,
                settings=layer.to_dict(),
            )
        )
    return tuple(reports)
