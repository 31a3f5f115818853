"""save_compressed / load_compressed: a pruned model goes to disk and comes back without pickle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from nncompress.errors import ArtifactError
from nncompress.io import load_compressed, read_manifest, save_compressed
from nncompress.models.mnist import Net
from tests.nncompress.io.conftest import SEED_CONFIG, Pruned


def _save(pruned: Pruned, out: Path) -> None:
    save_compressed(
        pruned.model,
        out,
        architecture="mnist_net",
        kept=pruned.kept,
        config_list=SEED_CONFIG,
        pruner="l1norm",
        input_shape=[1, 1, 28, 28],
        metrics={"params": sum(p.numel() for p in pruned.model.parameters())},
    )


def _edit_manifest(out: Path, edit: object) -> None:
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


def test_round_trip_gives_identical_outputs(pruned_net: Pruned, tmp_path: Path) -> None:
    _save(pruned_net, tmp_path)
    loaded = load_compressed(tmp_path)
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(loaded(x), pruned_net.model(x))
    shapes = {n: tuple(p.shape) for n, p in loaded.named_parameters()}
    assert shapes["conv1.weight"] == (10, 1, 5, 5)
    assert shapes["conv2.weight"] == (25, 10, 5, 5)
    assert shapes["fc1.weight"] == (250, 400)
    assert shapes["fc2.weight"] == (10, 250)
    assert sum(p.numel() for p in loaded.parameters()) == 109_295


def test_manifest_records_what_rebuilding_needs(pruned_net: Pruned, tmp_path: Path) -> None:
    manifest = save_compressed(
        pruned_net.model,
        tmp_path,
        architecture="mnist_net",
        kept=pruned_net.kept,
        config_list=SEED_CONFIG,
        pruner="l1norm",
        input_shape=[1, 1, 28, 28],
    )
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest.to_dict()
    assert on_disk["architecture"] == "mnist_net"
    assert on_disk["kept"]["conv1"]["out"] == pruned_net.kept["conv1"]["out"]
    assert len(on_disk["kept"]["conv1"]["out"]) == 10
    assert on_disk["structured"] is True
    assert on_disk["config_list"] == SEED_CONFIG
    assert on_disk["input_shape"] == [1, 1, 28, 28] and on_disk["input_dtype"] == "float32"
    assert set(on_disk["versions"]) >= {"nncompress", "torch", "torch_pruning"}
    weights = (tmp_path / "model.safetensors").read_bytes()
    assert on_disk["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert on_disk["weights_bytes"] == len(weights)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert {k: v["shape"] for k, v in on_disk["tensors"].items()} == {
        k: list(t.shape) for k, t in tensors.items()
    }


def test_no_pickle_is_involved(pruned_net: Pruned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(pruned_net, tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_compressed must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr("pickle.load", refuse)
    monkeypatch.setattr("pickle.loads", refuse)
    load_compressed(tmp_path / "manifest.json")


def test_corrupt_weights_are_refused(pruned_net: Pruned, tmp_path: Path) -> None:
    _save(pruned_net, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last tensor's data
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt") as info:
        load_compressed(tmp_path)
    assert info.value.context["field"] == "weights_sha256"


def test_missing_weights_are_refused(pruned_net: Pruned, tmp_path: Path) -> None:
    _save(pruned_net, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        load_compressed(tmp_path)


def test_edited_tensor_shape_names_the_tensor(pruned_net: Pruned, tmp_path: Path) -> None:
    _save(pruned_net, tmp_path)
    _edit_manifest(tmp_path, lambda d: d["tensors"]["fc1.weight"].update(shape=[500, 800]))
    with pytest.raises(ArtifactError, match=r"fc1\.weight") as info:
        load_compressed(tmp_path)
    assert info.value.context["tensor"] == "fc1.weight"


def test_edited_kept_indices_are_refused(pruned_net: Pruned, tmp_path: Path) -> None:
    _save(pruned_net, tmp_path)
    _edit_manifest(tmp_path, lambda d: d["kept"]["conv1"].update(out=d["kept"]["conv1"]["out"][:-1]))
    with pytest.raises(ArtifactError) as info:
        load_compressed(tmp_path)
    # Either the replay refuses the record or the shapes then disagree with the weights.
    assert info.value.context["field"] in {"kept", "tensors"}


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("tensors"), "tensors"),
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d.update(weights_file="../../etc/passwd"), "weights_file"),
        (lambda d: d.update(architecture="no_such_net"), "architecture"),
        (lambda d: d.update(unexpected=1), "unexpected"),
    ],
)
def test_edited_manifest_fields_are_named(
    pruned_net: Pruned, tmp_path: Path, edit: object, field: str
) -> None:
    _save(pruned_net, tmp_path)
    _edit_manifest(tmp_path, edit)
    with pytest.raises(ArtifactError) as info:
        load_compressed(tmp_path)
    assert info.value.context["field"] == field


def test_manifest_that_is_not_json_is_refused(pruned_net: Pruned, tmp_path: Path) -> None:
    _save(pruned_net, tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_masked_model_without_kept_indices_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.fc1.weight[model.fc1.weight.abs() < 0.02] = 0.0  # element-wise sparsity, shapes unchanged
    manifest = save_compressed(
        model,
        tmp_path,
        architecture="mnist_net",
        kept=None,
        config_list=[],
        pruner="level",
        input_shape=[1, 1, 28, 28],
    )
    assert manifest.kept == {} and manifest.structured is False
    loaded = load_compressed(tmp_path)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight)


def test_tied_weights_are_saved_and_reloaded(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight  # shared storage: safetensors refuses it unless handled

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    from nncompress.models import Architecture, register

    register(Architecture("test_tied", Tied, (1, 4)), replace=True)
    model = Tied()
    save_compressed(
        model,
        tmp_path,
        architecture="test_tied",
        kept=None,
        config_list=[],
        pruner="level",
        input_shape=[1, 4],
    )
    loaded = load_compressed(tmp_path)
    x = torch.randn(2, 4)
    assert torch.equal(loaded(x), model(x))


def test_artifact_without_architecture_says_to_use_onnx(tmp_path: Path) -> None:
    save_compressed(
        Net(),
        tmp_path,
        architecture=None,
        kept=None,
        config_list=[],
        pruner="l1norm",
        input_shape=[1, 1, 28, 28],
    )
    with pytest.raises(ArtifactError, match="onnx") as info:
        load_compressed(tmp_path)
    assert info.value.context["field"] == "architecture"
