"""Hugging Face model folders: described without tensors, loaded strictly, hostile uploads refused."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io import detect_format, load_model
from nncompress.io.hf_dir import describe_hf_dir, extract_hf_zip, load_hf_dir
from tests.app.model_files import timm_resnet18_folder, tiny_bert, tiny_gpt2, tiny_vit

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")

_TEXT = {"vocab_size": 100, "max_position_embeddings": 64}


def _distilbert() -> nn.Module:
    cfg = transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **_TEXT)
    return transformers.DistilBertModel(cfg)


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "bert": tiny_bert,
    "gpt2": tiny_gpt2,
    "vit": tiny_vit,
    "distilbert": _distilbert,
}


def _save(name: str, directory: Path, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    model = BUILDERS[name]().eval()
    model.save_pretrained(directory, safe_serialization=True, **kwargs)
    return model


def _first(out: object) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]  # type: ignore[index]


def _zip(directory: Path, path: Path, *, folder: str = "", extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(directory.iterdir()):
            zf.write(f, folder + f.name)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bert")
    _save("bert", path)
    return path


# --- transformers round trips ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "shape", "dtype"),
    [
        ("bert", "BertForSequenceClassification", (1, 16), torch.long),
        ("gpt2", "GPT2LMHeadModel", (1, 16), torch.long),
        ("vit", "ViTForImageClassification", (1, 3, 32, 32), torch.float32),
        ("distilbert", "DistilBertModel", (1, 16), torch.long),
    ],
)
def test_save_pretrained_folder_describes_and_loads(
    name: str, cls: str, shape: tuple[int, ...], dtype: torch.dtype, tmp_path: Path
) -> None:
    original = _save(name, tmp_path)
    summary = describe_hf_dir(tmp_path)
    assert summary.library == "transformers" and summary.architecture == f"hf/{cls}"
    assert summary.input_shape == shape and summary.input_dtype == dtype
    assert summary.num_params == sum(p.numel() for p in original.parameters())
    assert json.dumps(summary.to_dict())
    loaded = load_hf_dir(tmp_path)
    assert not loaded.model.training and loaded.model.config._attn_implementation == "eager"
    x = loaded.example_input(2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = loaded.model(x)
        assert isinstance(out, torch.Tensor)  # the engine gets one tensor, not a ModelOutput
        assert torch.allclose(out, _first(original(x)), atol=1e-5)
    assert detect_format(tmp_path) == "hf_dir"
    assert isinstance(load_model(tmp_path), type(loaded.model))


def test_tied_lm_head_is_allowed_missing(tmp_path: Path) -> None:
    _save("gpt2", tmp_path)
    assert "lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))
    summary = describe_hf_dir(tmp_path)
    assert summary.tied == {"lm_head.weight": "transformer.wte.weight"}
    model = load_hf_dir(tmp_path).model
    assert model.lm_head.weight is model.transformer.wte.weight


def test_sharded_folder_loads(tmp_path: Path) -> None:
    original = _save("bert", tmp_path, max_shard_size="30KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    summary = describe_hf_dir(tmp_path)
    assert len(summary.weight_files) > 1
    x = summary.example_input(1)
    assert torch.allclose(load_hf_dir(tmp_path).model(x), original(x).logits, atol=1e-5)


def test_module_paths_stay_those_of_transformers(bert_dir: Path) -> None:
    names = dict(load_hf_dir(bert_dir).model.named_modules())
    assert isinstance(names["bert.encoder.layer.0.intermediate.dense"], nn.Linear)


# --- zips --------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["", "my-model/"])
def test_zipped_folder(bert_dir: Path, tmp_path: Path, folder: str) -> None:
    path = _zip(bert_dir, tmp_path / "m.zip", folder=folder, extra={f"{folder}README.md": b"# hi"})
    assert detect_format(path) == "hf_dir"
    summary = describe_hf_dir(path)
    assert summary.architecture == "hf/BertForSequenceClassification"
    x = summary.example_input(1)
    expected = load_hf_dir(bert_dir).model(x)
    assert torch.allclose(load_hf_dir(path).model(x), expected)
    assert torch.allclose(load_model(path, fmt="hf_dir")(x), expected)
    out = extract_hf_zip(path, tmp_path / "x")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in bert_dir.iterdir())
    assert not (out / "README.md").exists()


@pytest.mark.parametrize(
    ("member", "match"),
    [
        ("../x", "unsafe path"),
        ("/etc/x", "unsafe path"),
        ("a/../../x", "unsafe path"),
        ("C:/x", "unsafe path"),
        ("evil.py", "unexpected file"),
        ("pytorch_model.bin", "pickled"),
        ("sub/deeper/config.json", "unexpected folder"),
    ],
)
def test_hostile_zip_members_are_refused(bert_dir: Path, tmp_path: Path, member: str, match: str) -> None:
    path = _zip(bert_dir, tmp_path / "m.zip", extra={member: b"x"})
    with pytest.raises(ModelLoadError, match=match):
        describe_hf_dir(path)
    with pytest.raises(ModelLoadError, match=match):
        extract_hf_zip(path, tmp_path / "out")
    assert not (tmp_path / "x").exists()


def test_symlink_member_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    path = _zip(bert_dir, tmp_path / "m.zip")
    info = zipfile.ZipInfo("tokenizer.json")
    info.external_attr = 0o120777 << 16
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ModelLoadError, match="symbolic link"):
        describe_hf_dir(path)


def test_size_limit_applies_before_reading(bert_dir: Path, tmp_path: Path) -> None:
    path = _zip(bert_dir, tmp_path / "m.zip")
    with pytest.raises(ModelLoadError, match="at most 1000 are accepted"):
        describe_hf_dir(path, max_bytes=1000)


# --- hostile or broken configs -----------------------------------------------------------------


def _edit_config(directory: Path, edit: Callable[[dict[str, object]], None]) -> None:
    cfg = json.loads((directory / "config.json").read_text())
    edit(cfg)
    (directory / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update(auto_map={"AutoModel": "evil.EvilModel"}), "auto_map"),
        (lambda c: c.update(text_config={"auto_map": {"AutoModel": "x.Y"}}), "auto_map"),
        (lambda c: c.update(trust_remote_code=True), "trust_remote_code"),
        (lambda c: c.update(architectures=["EvilModel"]), "not a model class"),
        (lambda c: c.update(architectures=["BertPreTrainedModel"]), "not a model class"),
        (lambda c: c.update(architectures=["GPT2LMHeadModel"]), "does not take a 'bert' config"),
        (lambda c: c.update(model_type="no-such-type"), "does not know"),
        (lambda c: c.pop("model_type") and c.pop("architectures"), "names no model"),
        (lambda c: c.update(intermediate_size=48), "shape mismatches"),
        (lambda c: c.update(num_hidden_layers=10**6), "layers; refused"),
    ],
)
def test_bad_configs_are_refused(
    tmp_path: Path, edit: Callable[[dict[str, object]], None], match: str
) -> None:
    _save("bert", tmp_path)
    _edit_config(tmp_path, edit)
    with pytest.raises(ModelLoadError, match=match):
        describe_hf_dir(tmp_path)
    with pytest.raises(ModelLoadError, match=match):
        load_hf_dir(tmp_path)


def test_private_attention_setting_is_not_taken_from_the_upload(tmp_path: Path) -> None:
    # '_attn_implementation' could name a hub kernel (downloaded code); the loader always uses eager.
    _save("bert", tmp_path)
    _edit_config(tmp_path, lambda c: c.update(_attn_implementation="kernels-community/flash-attn"))
    assert load_hf_dir(tmp_path).model.config._attn_implementation == "eager"


def test_huge_config_is_refused_unread(tmp_path: Path) -> None:
    _save("bert", tmp_path)
    (tmp_path / "config.json").write_bytes(
        b'{"model_type": "bert", "x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    )
    with pytest.raises(ModelLoadError, match=r"config\.json is \d+ bytes"):
        describe_hf_dir(tmp_path)


def test_missing_weights_are_named(tmp_path: Path) -> None:
    _save("bert", tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors"):
        describe_hf_dir(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match="safe_serialization=True"):
        describe_hf_dir(tmp_path)


def test_missing_and_wrong_shaped_tensors_are_listed(tmp_path: Path) -> None:
    _save("bert", tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("classifier.bias")
    state["classifier.weight"] = torch.zeros(4, 32)
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as info:
        describe_hf_dir(tmp_path)
    assert info.value.context["missing"] == ["classifier.bias"]
    assert info.value.context["unexpected"] == ["extra.weight"]
    assert info.value.context["shape_mismatches"]["classifier.weight"] == {"file": [4, 32], "model": [3, 32]}


def test_corrupt_safetensors_header_is_refused(tmp_path: Path) -> None:
    _save("bert", tmp_path)
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[:8] = (10**12).to_bytes(8, "little")
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="header length"):
        describe_hf_dir(tmp_path)


# --- timm folders ------------------------------------------------------------------------------


def test_timm_save_for_hf_folder(tmp_path: Path) -> None:
    original = timm_resnet18_folder(tmp_path, num_classes=7)
    summary = describe_hf_dir(tmp_path)
    assert summary.library == "timm" and summary.architecture == "timm/resnet18"
    assert summary.input_shape == (1, 3, 224, 224)
    loaded = load_hf_dir(tmp_path).model
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), original(x), atol=1e-5)
    assert loaded.get_classifier().out_features == 7


@pytest.mark.parametrize(
    "arg", [{"checkpoint_path": "/etc/passwd"}, {"pretrained_cfg_overlay": {"file": "x"}}]
)
def test_timm_args_that_name_files_are_refused(tmp_path: Path, arg: dict[str, object]) -> None:
    timm_resnet18_folder(tmp_path, num_classes=7)
    _edit_config(tmp_path, lambda c: c["model_args"].update(arg))  # type: ignore[union-attr]
    with pytest.raises(ModelLoadError, match="refused"):
        describe_hf_dir(tmp_path)


def test_unknown_timm_model_is_refused(tmp_path: Path) -> None:
    timm_resnet18_folder(tmp_path, num_classes=7)
    _edit_config(tmp_path, lambda c: c.update(architecture="resnet_evil"))
    with pytest.raises(ModelLoadError, match="timm has no model"):
        describe_hf_dir(tmp_path)


# --- the engine prunes what was loaded ---------------------------------------------------------


@pytest.mark.slow  # ~5-10 s: traces BERT twice (prune, speedup) and verifies on three inputs
def test_engine_prunes_bert_ffn(bert_dir: Path) -> None:
    from nncompress.pruners import prune
    from nncompress.speedup import speedup

    loaded = load_hf_dir(bert_dir)
    x = loaded.example_input(1, generator=torch.Generator().manual_seed(0))
    layers = [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(2)]
    res = prune(
        loaded.model, [{"sparsity_per_layer": 0.5, "op_names": layers}], pruner="l1norm", example_inputs=x
    )
    result = speedup(loaded.model, res.masks, x)
    shrunk = dict(result.model.named_modules())
    assert all(shrunk[name].out_features == 32 for name in layers)
    assert result.model(loaded.example_input(3)).shape == (3, 3)


@pytest.mark.slow
def test_engine_prunes_gpt2_mlp(tmp_path: Path) -> None:
    from nncompress.pruners import prune
    from nncompress.speedup import speedup

    _save("gpt2", tmp_path)
    loaded = load_hf_dir(tmp_path)
    x = loaded.example_input(1)
    config = [{"sparsity_per_layer": 0.5, "op_names": ["transformer.h.0.mlp.c_fc"]}]
    res = prune(loaded.model, config, pruner="l1norm", example_inputs=x)
    result = speedup(loaded.model, res.masks, x)
    c_fc = dict(result.model.named_modules())["transformer.h.0.mlp.c_fc"]
    assert tuple(c_fc.weight.shape) == (32, 64)  # Conv1D: [in, out]; 128 hidden units halved
    assert result.model(loaded.example_input(2)).shape == (2, 16, 100)
