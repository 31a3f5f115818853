"""Compressed Hugging Face and timm-folder models reload from their artifact alone (no pickle, no
service database): the manifest records ``hf/<Class>`` + the config, or ``timm/<model>`` + its
model_args; the rebuild replays the kept indices and loads the weights strictly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.errors import ArtifactError
from nncompress.io import load_compressed, load_hf_dir, read_manifest, save_compressed
from nncompress.io.hf_config import REFUSED_TIMM_ARGS
from nncompress.io.library_rebuild import build_recorded, recorded_build
from nncompress.pipeline import JobSpec, run_job
from nncompress.pruners import prune
from nncompress.speedup import speedup
from tests.app.model_files import timm_resnet18_folder, tiny_bert, tiny_gpt2, tiny_vit

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")


def _save_hf(make: Callable[[], nn.Module], folder: Path) -> Path:
    torch.manual_seed(0)
    make().save_pretrained(folder)
    return folder


def _save_timm_resnet18(folder: Path) -> Path:
    timm_resnet18_folder(folder, num_classes=10)
    return folder


CASES = {
    # name: (folder writer, config_list, example input)
    "bert_ffn": (
        lambda d: _save_hf(tiny_bert, d),
        [{"sparse_ratio": 0.5, "op_names_re": [r"bert\.encoder\.layer\.\d+\.intermediate\.dense"]}],
        lambda: torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1)),
    ),
    "gpt2_ffn": (
        lambda d: _save_hf(tiny_gpt2, d),
        [{"sparse_ratio": 0.5, "op_names_re": [r"transformer\.h\.\d+\.mlp\.c_fc"]}],
        lambda: torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1)),
    ),
    "vit_ffn": (
        lambda d: _save_hf(tiny_vit, d),
        [{"sparse_ratio": 0.5, "op_names_re": [r"vit\.layers\.\d+\.mlp\.fc1"]}],
        lambda: torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
    ),
    "timm_resnet18_dir": (
        _save_timm_resnet18,
        [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}, {"exclude": True, "op_names": ["conv1"]}],
        lambda: torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pruned_library_model_reloads_from_its_artifact(case: str, tmp_path: Path) -> None:
    write, config_list, make_input = CASES[case]
    loaded = load_hf_dir(write(tmp_path / "upload"))
    architecture, kwargs = recorded_build(
        loaded.summary.library, loaded.summary.class_name, loaded.model, loaded.summary.config
    )
    example = make_input()
    original = loaded.model.eval()
    masks = prune(original, config_list, example_inputs=example[:1]).masks
    sped = speedup(original, masks, example[:1])
    assert sped.kept, "the config should shrink some layer"
    save_compressed(
        sped.model,
        tmp_path / "out",
        architecture=architecture,
        architecture_kwargs=kwargs,
        kept=sped.kept,
        config_list=config_list,
        pruner="l1norm",
        input_shape=list(example[:1].shape),
        input_dtype=example.dtype,
    )
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["architecture"] == architecture
    assert architecture.startswith(("hf/", "timm/"))
    reloaded = load_compressed(tmp_path / "out")
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in original.parameters())
    with torch.inference_mode():
        expected, actual = sped.model.eval()(example), reloaded(example)
    assert isinstance(actual, torch.Tensor) and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_bert_manifest_records_the_config_before_speedup(tmp_path: Path) -> None:
    loaded = load_hf_dir(_save_hf(tiny_bert, tmp_path / "bert"))
    architecture, kwargs = recorded_build("transformers", "BertForSequenceClassification", loaded.model, {})
    assert architecture == "hf/BertForSequenceClassification"
    config = kwargs["config"]
    assert config["intermediate_size"] == 64 and config["architectures"] == ["BertForSequenceClassification"]
    json.dumps(kwargs)  # JSON-able as is


def test_timm_folder_records_its_model_args(tmp_path: Path) -> None:
    loaded = load_hf_dir(_save_timm_resnet18(tmp_path / "r18"))
    architecture, kwargs = recorded_build("timm", "resnet18", loaded.model, loaded.summary.config)
    assert architecture == "timm/resnet18"
    assert kwargs["pretrained"] is False and kwargs["num_classes"] == 10


@pytest.mark.parametrize(
    ("case", "layer", "dim"),
    [
        ("bert_ffn", "bert.encoder.layer.0.intermediate.dense", 0),
        ("gpt2_ffn", "transformer.h.0.mlp.c_fc", 1),  # Conv1D keeps its weight as (in, out)
        ("vit_ffn", "vit.layers.0.mlp.fc1", 0),
    ],
)
def test_run_job_on_a_transformers_folder_proves_the_reload(
    case: str, layer: str, dim: int, tmp_path: Path
) -> None:
    write, config_list, make_input = CASES[case]
    loaded = load_hf_dir(write(tmp_path / "upload"))
    example = make_input()
    spec = JobSpec.from_dict(
        {
            "pruner": "l1norm",
            "config_list": config_list,
            "input_shape": list(example[:1].shape),
            "input_dtype": "int64" if example.dtype == torch.long else "float32",
            "export_onnx": False,
            "latency_runs": 1,
            "latency_batch_sizes": [1],
        }
    )
    architecture = f"hf/{loaded.summary.class_name}"
    # architecture_kwargs left out: run_job reads the config from the transformers model itself.
    result = run_job(spec, model=loaded.model, architecture=architecture, out_dir=tmp_path / "out")
    assert result.speedup_applied
    assert result.checks["reload"] == {"max_abs_diff": 0.0, "architecture": architecture}
    manifest = read_manifest(tmp_path / "out")
    assert manifest.architecture == architecture
    reloaded = load_compressed(tmp_path / "out")
    before = dict(loaded.model.named_modules())[layer].weight.shape[dim]
    after = dict(reloaded.named_modules())[layer].weight.shape[dim]
    assert after == before // 2  # the config keeps the old width: the kept indices halved it


def test_manifest_config_with_remote_code_is_refused(tmp_path: Path) -> None:
    config = tiny_bert().config.to_dict()
    config["auto_map"] = {"AutoModel": "evil.Model"}
    with pytest.raises(ArtifactError) as err:
        build_recorded("hf/BertForSequenceClassification", {"config": config})
    assert err.value.context["field"] == "architecture_kwargs"


def test_manifest_config_of_another_class_is_refused() -> None:
    config = tiny_bert().config.to_dict()
    config["architectures"] = ["BertForSequenceClassification"]
    with pytest.raises(ArtifactError, match="describes hf/BertForSequenceClassification"):
        build_recorded("hf/BertModel", {"config": config})


def test_timm_kwargs_that_download_are_refused() -> None:
    with pytest.raises(ArtifactError) as err:
        build_recorded("timm/resnet18", {"pretrained": True})
    assert err.value.context["keys"] == ["pretrained"]
    with pytest.raises(ArtifactError):
        build_recorded("timm/resnet18", {"checkpoint_path": "/etc/passwd"})
    # A manifest refuses every key an uploaded config.json may not carry (one list, io/hf_config.py).
    for key in sorted(REFUSED_TIMM_ARGS - {"pretrained"}):
        with pytest.raises(ArtifactError) as err:
            build_recorded("timm/resnet18", {key: True})
        assert err.value.context["keys"] == [key]


def test_hf_architecture_without_a_config_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="rebuilt from its config"):
        save_compressed(
            tiny_bert(),
            tmp_path,
            architecture="hf/BertForSequenceClassification",
            kept=None,
            config_list=[],
            pruner="none",
            input_shape=[1, 16],
        )
