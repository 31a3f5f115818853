"""inspect_onnx / example_inputs / load_onnx's refusals and external data, and pruning an imported model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from nncompress import prune, speedup
from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import import example_inputs, inspect_onnx, load_onnx

transformers = pytest.importorskip("transformers")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Bert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = transformers.BertConfig(
            vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=32, num_labels=2,
        )  # fmt: skip
        self.bert = transformers.BertForSequenceClassification(config)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert(ids).logits


def _export(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def net_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = Net().eval()
    return model, _export(model, torch.randn(1, 3, 8, 8), tmp_path_factory.mktemp("net") / "net.onnx")


@pytest.fixture(scope="module")
def bert_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = Bert().eval()
    ids = torch.randint(0, 50, (1, 16))
    return model, _export(model, ids, tmp_path_factory.mktemp("bert") / "bert.onnx")


def test_inspect_lists_inputs_ops_and_pytorch_layer_names(net_onnx: tuple[nn.Module, Path]) -> None:
    _, path = net_onnx
    summary = inspect_onnx(path)
    assert summary.opset == 17 and not summary.unsupported_ops and not summary.external_data
    (spec,) = summary.inputs
    assert (spec.name, spec.dtype, spec.shape) == ("input", "float32", ("batch", 3, 8, 8))
    # The conv's BatchNorm is folded by the exporter: its initializer is anonymous, the path survives.
    layers = {layer.name: layer.type for layer in summary.layers}
    assert layers == {
        "features.0.0": "Conv2d",
        "features.1": "Conv2d",
        "classifier.1": "Linear",
        "classifier.3": "Linear",
    }
    assert {"Conv", "Gemm", "Relu", "Flatten"} <= set(summary.ops)
    as_dict = summary.to_dict()
    assert as_dict["inputs"][0]["shape"] == ["batch", 3, 8, 8] and as_dict["layers"][0]["type"] == "Conv2d"


def test_token_ids_stay_int64(bert_onnx: tuple[nn.Module, Path]) -> None:
    model, path = bert_onnx
    summary = inspect_onnx(path)
    (spec,) = summary.inputs
    assert spec.dtype == "int64" and spec.int_high == 50
    (ids,) = example_inputs(summary, batch=3)
    assert ids.dtype == torch.int64 and ids.shape == (3, 16) and int(ids.min()) >= 0 and int(ids.max()) < 50
    gm = load_onnx(path)
    (placeholder,) = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert placeholder.meta["onnx_dtype"] == torch.int64
    with torch.inference_mode():
        torch.testing.assert_close(gm(ids), model(ids), rtol=1e-4, atol=1e-5)
    names = dict(gm.named_modules())
    assert isinstance(names["bert.bert.encoder.layer.0.intermediate.dense"], nn.Linear)
    assert names["bert.bert.encoder.layer.0.intermediate.dense"].bias is not None  # MatMul + Add fused
    assert isinstance(names["bert.bert.embeddings.word_embeddings"], nn.Embedding)
    assert isinstance(names["bert.bert.encoder.layer.1.output.LayerNorm"], nn.LayerNorm)


def test_prune_and_speedup_an_imported_cnn(net_onnx: tuple[nn.Module, Path]) -> None:
    _, path = net_onnx
    gm = load_onnx(path)
    x = example_inputs(inspect_onnx(path), batch=2)
    config = [
        {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
        {"exclude": True, "op_names": ["classifier.3"]},
    ]
    result = speedup(gm, prune(gm, config, pruner="l1norm", example_inputs=x).masks, x)
    assert result.params_after < result.params_before
    assert result.model.get_submodule("features.1").out_channels == 8


def test_prune_the_ffn_of_an_imported_bert(bert_onnx: tuple[nn.Module, Path]) -> None:
    _, path = bert_onnx
    gm = load_onnx(path)
    x = example_inputs(inspect_onnx(path), batch=2)
    ffn = [f"bert.bert.encoder.layer.{i}.intermediate.dense" for i in range(2)]
    config = [{"sparsity_per_layer": 0.5, "op_names": ffn}]
    result = speedup(gm, prune(gm, config, pruner="l1norm", example_inputs=x).masks, x)
    assert result.params_after < result.params_before
    assert result.model.get_submodule(ffn[0]).out_features == 32


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_ops_are_listed_with_hints(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Hardmax", ["x"], ["h"]),
        helper.make_node("QuantizeLinear", ["h", "s"], ["y"]),
    ]
    path = tmp_path / "bad.onnx"
    onnx.save(_model(nodes, [numpy_helper.from_array(np.array(0.1, np.float32), "s")]), str(path))
    summary = inspect_onnx(path)
    assert summary.unsupported_ops == ("Hardmax", "QuantizeLinear")
    assert "dynamo=False" in summary.hints["Hardmax"] and "never" in summary.hints["QuantizeLinear"]
    with pytest.raises(ModelLoadError, match="Hardmax, QuantizeLinear") as info:
        load_onnx(path)
    assert info.value.context["ops"] == ["Hardmax", "QuantizeLinear"]


def _external(tmp_path: Path, location: str) -> Path:
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "fc.weight")
    model = _model([helper.make_node("MatMul", ["x", "fc.weight"], ["y"])], [weight])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data", size_threshold=0)
    if location != "ext.data":  # point the tensor somewhere else, as a hostile upload would
        proto = onnx.load(str(path), load_external_data=False)
        for entry in proto.graph.initializer[0].external_data:
            if entry.key == "location":
                entry.value = location
        onnx.save(proto, str(path))
    return path


def test_external_data_loads_from_the_given_directory(tmp_path: Path) -> None:
    path = _external(tmp_path, "ext.data")
    assert inspect_onnx(path).external_data
    with pytest.raises(ModelLoadError, match="together"):
        load_onnx(path)
    gm = load_onnx(path, external_data_dir=tmp_path)
    x = torch.randn(1, 4)
    torch.testing.assert_close(gm(x), x @ torch.arange(16.0).reshape(4, 4))
    assert isinstance(gm.get_submodule("fc"), nn.Linear)


@pytest.mark.parametrize("location", ["../ext.data", "/etc/passwd", "sub/ext.data", "link.data"])
def test_external_data_outside_the_directory_is_refused(tmp_path: Path, location: str) -> None:
    path = _external(tmp_path, location)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ext.data").write_bytes((tmp_path / "ext.data").read_bytes())
    (tmp_path / "link.data").symlink_to(tmp_path / "ext.data")
    with pytest.raises(ModelLoadError, match="external data") as info:
        load_onnx(path, external_data_dir=tmp_path)
    assert info.value.context["location"] == location


def test_a_wrong_conversion_is_caught_by_the_onnxruntime_check(
    net_onnx: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nncompress.io.onnx_import import ops

    monkeypatch.setitem(ops._ELEMENTWISE, "Relu", torch.nn.functional.gelu)
    with pytest.raises(ModelLoadError, match="differs from onnxruntime") as info:
        load_onnx(net_onnx[1])
    assert info.value.context["output"] and info.value.context["max_rel_error"] > 1e-4
