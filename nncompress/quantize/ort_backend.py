"""Static and dynamic int8 quantization of an exported graph with ``onnxruntime.quantization``.

Why onnxruntime. ResNet-18 CIFAR, batch 64, one thread on this Xeon (AVX512-VNNI, AMX), medians of
interleaved runs on a shared, noisy machine (the benchmark's table has the full set):
- onnxruntime int8 (this module): 3.3-3.9x faster than fp32 in onnxruntime (about 400-665 ms vs
  1.4-2.2 s), 44.7 MB -> 11.3 MB; the artifact is one .onnx file any onnxruntime runs, with no
  compiler, no project code and no pickle; it quantized every model tried (seed Net, ResNets, LSTM).
- torch.ao FX (x86 backend, TorchScript file): about 190-510 ms, but ``quantize_fx`` is deprecated,
  torch 2.13 warns that quantized tensors will be removed, and it fails on the seed Net
  (``x.view`` on its channels-last output). Kept as an optional second artifact.
- torchao 0.18 pt2e (``X86InductorQuantizer`` + ``torch.compile`` with freezing): 134 ms vs 1,265 ms
  fp32 inductor, the fastest, but it needs torchao (not a dependency), a C++ compiler and 27-180 s of
  compilation on the machine that serves, and its inductor qconv lowering crashed on the seed Net
  (stride assertion). Without ``freezing`` it was no faster than fp32 (1,018 vs 1,101 ms).
QDQ vs QOperator: equal within noise here (407 vs 432 ms); QDQ is the default because other runtimes
read it. With int8 instead of uint8 activations the CPU kernels were slower than fp32 (1,176 ms).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nncompress.config.messages import where
from nncompress.io.onnx_export import quiet_exporters
from nncompress.quantize.calibration import BatchReader
from nncompress.quantize.config import QuantConfigError
from nncompress.quantize.export import ExportedGraph, gemm_to_matmul, preprocess
from nncompress.quantize.resolve import LayerQuant, TensorQuant

__all__ = ["WEIGHTED_OPS", "quantize_graph", "uniform_settings"]

# ONNX ops that carry a layer's weight; those of layers the config leaves out are excluded by name.
WEIGHTED_OPS: frozenset[str] = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "Gather", "Attention"}
)
_DYNAMIC_OPS: tuple[str, ...] = ("MatMul", "LSTM")
# The ONNX ops a module type becomes (a Linear on 2-D input is Gemm, on 3-D input MatMul + Add). Other
# ops exported under the same module scope (the LSTM's Shape/Gather bookkeeping) are not its weights.
_LAYER_OPS: dict[str, frozenset[str]] = {
    "Conv1d": frozenset({"Conv"}),
    "Conv2d": frozenset({"Conv"}),
    "Linear": frozenset({"Gemm", "MatMul"}),
    "LSTM": frozenset({"LSTM"}),
}


def quantize_graph(
    graph: ExportedGraph,
    layers: dict[str, LayerQuant],
    *,
    mode: str,
    quant_format: str,
    out_path: Path,
    calibration: Iterable[Any] | None,
    calibration_batches: int,
) -> dict[str, Any]:
    """Writes the int8 ONNX model for ``layers`` of ``graph``.

    Args:
        graph: the fp32 graph from :func:`~nncompress.quantize.export.export_for_quantization`.
        layers: resolved per-layer settings (all of them share one setting per tensor kind).
        mode: ``'static'``, ``'qat'`` or ``'dynamic'``.
        quant_format: ``'qdq'`` or ``'qoperator'`` (static and QAT).
        out_path: where to write the int8 ``.onnx``.
        calibration: batches of inputs (static and QAT); ignored by dynamic mode.
        calibration_batches: the most batches read from ``calibration``.

    Returns:
        What was run: ``calibration_batches_used`` (int), ``onnx_nodes`` (layer -> node names) and
        ``weights`` (layer -> {initializer name: fp32 bytes}) of the pre-processed fp32 graph.

    Raises:
        QuantConfigError: settings that onnxruntime cannot apply together, missing calibration data,
            or a selected layer that has no node in the exported graph.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    mixed = mode != "dynamic" and quant_format == "qdq"
    weight, activation = uniform_settings(layers, mixed_weights=mixed)
    pre = preprocess(graph.path, out_path.with_name(out_path.stem + ".fp32-pre.onnx"))
    if mode == "dynamic":
        gemm_to_matmul(pre)
    ops = _graph_nodes(pre)
    nodes = _nodes_by_layer(graph, ops, layers)
    weights = _weights_by_layer(pre, nodes)
    extra: dict[str, Any] = {"WeightSymmetric": weight.scheme == "symmetric"}
    used = 0
    try:
        if mode == "dynamic":
            selected = [n for names in nodes.values() for n in names if ops[n] in _DYNAMIC_OPS]
            with quiet_exporters():
                quantize_dynamic(
                    str(pre),
                    str(out_path),
                    op_types_to_quantize=list(_DYNAMIC_OPS),
                    per_channel=weight.per_channel,
                    weight_type=_qtype(weight.dtype),
                    nodes_to_quantize=selected,
                    extra_options=extra,
                )
        else:
            if calibration is None:
                raise QuantConfigError(
                    f"calibration: mode {mode!r} needs calibration batches (model inputs) to measure "
                    "activation ranges; pass calibration=<iterable of batches>",
                    key="calibration",
                    expected="an iterable of input batches",
                )
            assert activation is not None  # static/QAT layers always quantize activations
            extra["ActivationSymmetric"] = activation.scheme == "symmetric"
            if mixed:
                extra["TensorQuantOverrides"] = _weight_overrides(pre, layers, nodes, weight)
            stream = iter(calibration)
            first = next(stream, None)
            if first is None:
                raise QuantConfigError(
                    "calibration: the iterable gave no batch; static quantization needs at least one",
                    key="calibration",
                    expected="an iterable of at least one input batch",
                )
            reader = BatchReader(itertools.chain([first], stream), graph.input_names, calibration_batches)
            excluded = _excluded_nodes(graph, ops, layers)
            with quiet_exporters():
                quantize_static(
                    str(pre),
                    str(out_path),
                    reader,
                    quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                    per_channel=weight.per_channel,
                    activation_type=_qtype(activation.dtype),
                    weight_type=_qtype(weight.dtype),
                    nodes_to_exclude=excluded,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options=extra,
                )
            used = reader.seen
    finally:
        pre.unlink(missing_ok=True)
    return {"calibration_batches_used": used, "onnx_nodes": nodes, "weights": weights}


def uniform_settings(
    layers: dict[str, LayerQuant], *, mixed_weights: bool = False
) -> tuple[TensorQuant, TensorQuant | None]:
    """The model-wide weight and activation settings, refusing mixes onnxruntime cannot write.

    onnxruntime's quantizer takes weight and activation types, symmetry and per-channel as global
    options. Per-tensor overrides lift that for *weights* in the QDQ format (``mixed_weights``); the
    global weight setting is then the one most layers ask for. Activations must agree: a uint8 and an
    int8 activation meeting at one tensor would need conversion nodes. The error names the two entries
    that disagree instead of quietly applying one of them.

    Args:
        layers: the resolved layers.
        mixed_weights: allow layers to differ in their weight setting (QDQ format, static or QAT).

    Returns:
        ``(weight, activation)``: the global settings.

    Raises:
        QuantConfigError: two layers ask for settings that cannot coexist.
    """
    first = next(iter(layers.values()))
    kinds = ("activation",) if mixed_weights else ("weight", "activation")
    for layer in layers.values():
        for kind in kinds:
            mine, theirs = getattr(layer, kind), getattr(first, kind)
            if mine != theirs:
                scope = (
                    "one activation setting to the whole model"
                    if kind == "activation"
                    else "one weight setting to the whole model unless the format is 'qdq' in mode 'static' "
                    "or 'qat'"
                )
                raise QuantConfigError(
                    f"{where(layer.entry_index)}: layer {layer.name!r} asks for {kind} {_describe(mine)} but "
                    f"layer {first.name!r} (config_list[{first.entry_index}]) for {_describe(theirs)}; the "
                    f"onnxruntime quantizer applies {scope}, so give these entries the same quant_dtype "
                    "and quant_scheme",
                    entry=layer.entry_index,
                    key=None,
                    value=layer.name,
                    expected=f"{kind} {_describe(theirs)}",
                )
    weights = Counter(layer.weight for layer in layers.values())
    return weights.most_common(1)[0][0], first.activation


def _weight_overrides(
    pre: Path, layers: dict[str, LayerQuant], nodes: dict[str, list[str]], weight: TensorQuant
) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` for the weights of layers whose setting differs from the global one."""
    import onnx

    by_name = {n.name: n for n in onnx.load(str(pre)).graph.node}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for name, layer in layers.items():
        if layer.weight == weight:
            continue
        for node_name in nodes[name]:
            node = by_name[node_name]
            override: dict[str, Any] = {
                "quant_type": _qtype(layer.weight.dtype),
                "symmetric": layer.weight.scheme == "symmetric",
            }
            if layer.weight.per_channel:
                # Output channels: dim 0 of Conv and Gemm(transB=1) weights, dim 1 of a MatMul's (in, out).
                override["axis"] = 1 if node.op_type == "MatMul" else 0
            overrides[node.input[1]] = [override]
    return overrides


def _describe(setting: TensorQuant | None) -> str:
    if setting is None:
        return "none"
    grain = "per channel" if setting.per_channel else "per tensor"
    return f"{setting.dtype} {setting.scheme} {grain}"


def _qtype(dtype: str) -> Any:
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if dtype == "int8" else QuantType.QUInt8


def _graph_nodes(path: Path) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


def _nodes_by_layer(
    graph: ExportedGraph, ops: dict[str, str], layers: dict[str, LayerQuant]
) -> dict[str, list[str]]:
    """Each selected layer's weighted nodes in the pre-processed graph; every layer must have one."""
    found: dict[str, list[str]] = {name: [] for name in layers}
    for node, module in graph.node_modules.items():
        if module in found and ops.get(node) in _LAYER_OPS.get(layers[module].op_type, WEIGHTED_OPS):
            found[module].append(node)
    for name, nodes in found.items():
        if not nodes:
            layer = layers[name]
            raise QuantConfigError(
                f"{where(layer.entry_index)}: layer {name!r} ({layer.op_type}) has no weighted node in the "
                f"exported ONNX graph ({graph.exporter}); it may be unused by forward(), or the exporter "
                "renamed it; exclude it with 'exclude_op_names'",
                entry=layer.entry_index,
                key=None,
                value=name,
                expected="layers that forward() runs",
            )
    return found


def _weights_by_layer(pre: Path, nodes: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """The weight initializers (not biases) each layer's nodes read, with their fp32 bytes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(pre))
    inits = {i.name: i for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    # Weight positions: Conv/Gemm/MatMul input 1; LSTM/GRU inputs 1 (W) and 2 (R); input 3+ are biases.
    positions = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
    out: dict[str, dict[str, int]] = {}
    for layer, names in nodes.items():
        found: dict[str, int] = {}
        for name in names:
            node = by_name[name]
            for pos in positions.get(node.op_type, (1,)):
                if pos < len(node.input) and node.input[pos] in inits:
                    found[node.input[pos]] = int(numpy_helper.to_array(inits[node.input[pos]]).nbytes)
        out[layer] = found
    return out


def _excluded_nodes(graph: ExportedGraph, ops: dict[str, str], layers: dict[str, LayerQuant]) -> list[str]:
    """Weighted nodes of layers the config leaves in float (unmapped weighted nodes included)."""
    return [
        node for node, op in ops.items() if op in WEIGHTED_OPS and graph.node_modules.get(node) not in layers
    ]
