"""Model intake: formats are sniffed from bytes, weights load strictly, pickles never run."""

from __future__ import annotations

import pickle
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io import detect_format, export_onnx, load_model
from nncompress.models.mnist import Net


class _Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return Net().eval()


def _same(a: nn.Module, b: nn.Module) -> bool:
    x = torch.randn(3, 1, 28, 28)
    with torch.inference_mode():
        return torch.allclose(a(x), b(x), atol=1e-5)


# --- detection --------------------------------------------------------------------------------


def test_detects_each_format_from_content_not_name(net: nn.Module, tmp_path: Path) -> None:
    # Every file gets a misleading name: only the bytes may decide.
    save_file(dict(net.state_dict()), str(tmp_path / "a.onnx"))
    torch.save(net.state_dict(), tmp_path / "b.safetensors")
    (tmp_path / "c.pt").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    export_onnx(net, torch.randn(1, 1, 28, 28), tmp_path / "d.pt")
    assert detect_format(tmp_path / "a.onnx") == "safetensors"
    assert detect_format(tmp_path / "b.safetensors") == "torch_zip"
    assert detect_format(tmp_path / "c.pt") == "pickle"
    assert detect_format(tmp_path / "d.pt") == "onnx"


def test_safetensors_whose_header_length_looks_like_a_pickle(tmp_path: Path) -> None:
    import json
    import struct

    from safetensors.torch import load_file

    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header = header.ljust(0x0280, b" ")  # length 640 is stored as 80 02 00 …: pickle PROTO 2
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0))
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert load_file(str(path))["w"].tolist() == [1.0, 2.0]
    assert detect_format(path) == "safetensors"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello world, not a model",
        b"PK\x03\x04garbage",
        bytes(range(256)) * 4,
        b"\x08\x07" + b"\xff" * 64,
    ],
)
def test_unknown_content_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError):
        detect_format(path)


def test_onnx_sniffing_reads_only_field_headers(net: nn.Module, tmp_path: Path) -> None:
    # A large file that opens like a ModelProto (ir_version) but is junk after it must be refused
    # without being parsed whole; a real export truncated by one byte no longer tiles its fields.
    junk = tmp_path / "junk.bin"
    with open(junk, "wb") as fh:
        fh.write(b"\x08\x08")  # field 1 (ir_version) = 8
        fh.write(b"\x3a\xff\xff\xff\x7f")  # field 7 (graph), claimed length 256 MiB: past the end
        fh.write(bytes(32 * 1024 * 1024))
    with pytest.raises(ModelLoadError):
        detect_format(junk)
    export_onnx(net, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx")
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes((tmp_path / "m.onnx").read_bytes()[:-1])
    with pytest.raises(ModelLoadError):
        detect_format(truncated)


# --- safe weights onto a registry architecture -------------------------------------------------


def test_safetensors_onto_architecture(net: nn.Module, tmp_path: Path) -> None:
    save_file(dict(net.state_dict()), str(tmp_path / "w.safetensors"))
    loaded = load_model(tmp_path / "w.safetensors", architecture="mnist_net")
    assert _same(loaded, net) and not loaded.training


@pytest.mark.parametrize("wrap", [False, True])
def test_weights_only_state_dict_onto_architecture(net: nn.Module, tmp_path: Path, wrap: bool) -> None:
    payload = {"state_dict": net.state_dict(), "epoch": 3} if wrap else net.state_dict()
    torch.save(payload, tmp_path / "w.pt")
    assert _same(load_model(tmp_path / "w.pt", architecture="mnist_net", fmt="torch_zip"), net)


def test_weights_need_an_architecture(net: nn.Module, tmp_path: Path) -> None:
    save_file(dict(net.state_dict()), str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError, match="name the architecture"):
        load_model(tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match="unknown architecture 'nope'"):
        load_model(tmp_path / "w.safetensors", architecture="nope")


def test_strict_load_names_missing_unexpected_and_mismatched(net: nn.Module, tmp_path: Path) -> None:
    state = dict(net.state_dict())
    state.pop("fc2.bias")
    state["extra.weight"] = torch.zeros(2)
    state["fc1.weight"] = torch.zeros(10, 10)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "w.safetensors", architecture="mnist_net")
    message = str(info.value)
    assert "fc2.bias" in message and "extra.weight" in message and "fc1.weight" in message
    assert info.value.context["missing"] == ["fc2.bias"]
    assert info.value.context["unexpected"] == ["extra.weight"]
    assert info.value.context["shape_mismatches"]["fc1.weight"] == {"file": [10, 10], "model": [500, 800]}


def test_declared_format_must_match_content(net: nn.Module, tmp_path: Path) -> None:
    torch.save(net.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError, match="declared as safetensors but its content is torch_zip"):
        load_model(tmp_path / "w.safetensors", fmt="safetensors", architecture="mnist_net")


# --- pickles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("architecture", [None, "mnist_net"])
def test_hostile_pickle_is_refused_and_never_runs(
    tmp_path: Path, writer: str, architecture: str | None
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"  # renamed to look safe
    if writer == "pickle":
        path.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    else:
        torch.save(_Payload(marker), path)
    assert detect_format(path) in {"pickle", "torch_zip"}
    with pytest.raises(ModelLoadError, match="pickled modules are disabled on this deployment"):
        load_model(path, architecture=architecture)
    with pytest.raises(ModelLoadError):
        load_model(path, fmt="safetensors", architecture=architecture)
    assert not marker.exists()


def test_whole_module_pickle_needs_allow_pickle(net: nn.Module, tmp_path: Path) -> None:
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(ModelLoadError, match="pickled modules are disabled"):
        load_model(tmp_path / "whole.pt")
    assert _same(load_model(tmp_path / "whole.pt", allow_pickle=True), net)


def test_pickled_graph_module_loads_when_allowed(tmp_path: Path) -> None:
    # A Sequential, because torch 2.13 cannot pickle a GraphModule whose code calls tensor methods
    # (its globals hold the string '_torch_Tensor_'); the seed Net's x.view(...) is one.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    torch.save(torch.fx.symbolic_trace(model), tmp_path / "gm.pt")
    loaded = load_model(tmp_path / "gm.pt", allow_pickle=True)
    assert isinstance(loaded, torch.fx.GraphModule) and _same(loaded, model)


class _Harmless:
    """A class the weights_only unpickler refuses, with no side effect."""


def test_allowed_pickle_must_hold_a_module(tmp_path: Path) -> None:
    torch.save({"not": "a module", "n": _Harmless()}, tmp_path / "x.pt")
    with pytest.raises(ModelLoadError, match=r"not an nn\.Module"):
        load_model(tmp_path / "x.pt", allow_pickle=True)


# --- ONNX -------------------------------------------------------------------------------------


def test_onnx_from_both_exporters_converts_to_an_equivalent_module(net: nn.Module, tmp_path: Path) -> None:
    x = torch.randn(1, 1, 28, 28)
    export_onnx(net, x, tmp_path / "dynamo.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            str(tmp_path / "legacy.onnx"),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    for name in ("dynamo.onnx", "legacy.onnx"):
        loaded = load_model(tmp_path / name, fmt="onnx")
        assert _same(loaded, net), name
        # Layers keep their names and types, so a config_list for the original selects them.
        modules = dict(loaded.named_modules())
        assert isinstance(modules["conv2"], nn.Conv2d) and isinstance(modules["fc1"], nn.Linear)
        assert modules["fc1"].weight.shape == (500, 800)


def test_onnx_with_batchnorm_and_residual_converts(tmp_path: Path) -> None:
    from nncompress.models import get

    torch.manual_seed(0)
    model = get("resnet18_cifar").build().eval()
    x = torch.randn(2, 3, 32, 32)
    export_onnx(model, x[:1], tmp_path / "r.onnx")
    loaded = load_model(tmp_path / "r.onnx")
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_onnx_external_data_is_refused(net: nn.Module, tmp_path: Path) -> None:
    export_onnx(net, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.save_model(
        proto,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    with pytest.raises(ModelLoadError, match="external data"):
        load_model(tmp_path / "ext.onnx")


def test_onnx_unsupported_op_is_named(tmp_path: Path) -> None:
    # A string op: no torch module will ever stand for it (Erf, used here before, is converted now).
    node = helper.make_node("StringNormalizer", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.STRING, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, [1, 4])],
    )
    onnx.save_model(helper.make_model(graph), str(tmp_path / "strings.onnx"))
    with pytest.raises(ModelLoadError, match="StringNormalizer") as info:
        load_model(tmp_path / "strings.onnx")
    assert info.value.context["ops"] == ["StringNormalizer"]


class _SizeView(nn.Module):
    """Flattens with x.view(x.size(0), -1): the TorchScript exporter turns it into Shape→Gather→Concat."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.view(y.size(0), -1))


def test_onnx_shape_arithmetic_keeps_the_batch_dynamic(tmp_path: Path) -> None:
    import warnings

    from nncompress.io import check_onnx

    torch.manual_seed(0)
    model = _SizeView().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 16, 16),),
            str(tmp_path / "legacy.onnx"),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
        )
    ops = {n.op_type for n in onnx.load(str(tmp_path / "legacy.onnx")).graph.node}
    assert {"Shape", "Gather", "Concat", "Reshape"} <= ops
    loaded = load_model(tmp_path / "legacy.onnx")
    x = torch.randn(5, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    # Exported again (as the pipeline does), the converted model still takes any batch size.
    path = export_onnx(loaded, x[:1], tmp_path / "again.onnx")
    assert check_onnx(path, loaded, x[:1], batch_sizes=(1, 3)).max_abs_diff < 1e-4


# --- declared formats, legacy pickles, torch.export archives ----------------------------------


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("declared", ["pickle", "torch_zip"])
def test_whole_module_loads_under_either_torch_save_format_name(
    net: nn.Module, tmp_path: Path, legacy: bool, declared: str
) -> None:
    # A caller that says "pickle" for a torch.save zip (or "torch_zip" for a legacy torch.save
    # pickle) means the same thing: both are torch.save output.
    path = tmp_path / "whole.pt"
    torch.save(net, path, _use_new_zipfile_serialization=not legacy)
    assert detect_format(path) == ("pickle" if legacy else "torch_zip")
    assert _same(load_model(path, fmt=declared, allow_pickle=True), net)
    with pytest.raises(ModelLoadError, match="pickled modules are disabled"):
        load_model(path, fmt=declared)


def test_legacy_state_dict_loads_without_pickle(net: nn.Module, tmp_path: Path) -> None:
    torch.save(net.state_dict(), tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    assert _same(load_model(tmp_path / "w.pt", fmt="pickle", architecture="mnist_net"), net)


def test_refusal_names_the_working_routes(net: nn.Module, tmp_path: Path) -> None:
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "whole.pt")
    assert "torch.onnx.export" in str(info.value) and "safetensors" in str(info.value)


def _export_pt2(net: nn.Module, path: Path) -> Path:
    program = torch.export.export(net, (torch.randn(1, 1, 28, 28),))
    torch.export.save(program, path)
    return path


def test_pt2_is_detected_and_needs_allow_pickle(net: nn.Module, tmp_path: Path) -> None:
    path = _export_pt2(net, tmp_path / "model.bin")  # the name is not what decides
    assert detect_format(path) == "pt2"
    with pytest.raises(ModelLoadError, match=r"torch\.export archives") as info:
        load_model(path)
    assert "torch.onnx.export" in str(info.value)
    with pytest.raises(ModelLoadError, match="declared as safetensors but its content is pt2"):
        load_model(path, fmt="safetensors", allow_pickle=True)
    loaded = load_model(path, fmt="pt2", allow_pickle=True)
    x = torch.randn(1, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)


def test_pt2_module_is_not_prunable(net: nn.Module, tmp_path: Path) -> None:
    # ExportedProgram.module() is a flat GraphModule: its layers are plain Modules holding tensors
    # (no Conv2d to select) and it refuses .eval(), which tracing calls. Documented in load_model.
    from nncompress.errors import NncompressError
    from nncompress.pruners import prune

    loaded = load_model(_export_pt2(net, tmp_path / "m.pt2"), allow_pickle=True)
    assert not any(isinstance(m, nn.Conv2d) for m in loaded.modules())
    with pytest.raises(NncompressError):
        prune(
            loaded,
            [{"sparsity_per_layer": 0.5, "op_names": ["conv1"]}],
            example_inputs=torch.randn(1, 1, 28, 28),
        )
