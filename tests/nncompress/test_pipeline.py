"""run_job end to end on the seed Net: stages, progress, cancellation, artifacts, resume."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from nncompress.errors import ConfigError
from nncompress.io import load_compressed
from nncompress.models import get
from nncompress.pipeline import STAGES, JobCancelled, JobResult, JobSpec, run_job

SEED_CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]


def _spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {
        "pruner": "l1norm",
        "config_list": SEED_CONFIG,
        "latency_runs": 3,
        "latency_batch_sizes": [1, 8],
    }
    data.update(overrides)
    return JobSpec.from_dict(data)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return get("mnist_net").build()


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str | None]] = []

    def __call__(self, stage: str, percent: float, message: str | None = None) -> None:
        self.calls.append((stage, percent, message))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[JobResult, _Recorder, Path, torch.nn.Module]:
    out = tmp_path_factory.mktemp("job")
    recorder = _Recorder()
    model = _net()
    result = run_job(_spec(), model=model, architecture="mnist_net", out_dir=out, progress=recorder)
    return result, recorder, out, model


# --- JobSpec ----------------------------------------------------------------------------------


def test_spec_round_trips_and_fills_defaults() -> None:
    spec = JobSpec.from_dict({"pruner": "fpgm", "config_list": SEED_CONFIG})
    assert spec.speedup and spec.verify and spec.export_onnx and spec.device == "cpu" and spec.seed == 0
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"pruner": "l1norm", "config_list": [], "speeedup": True}, "speeedup"),
        ({"config_list": []}, "pruner"),
        ({"pruner": "l1norm"}, "config_list"),
        ({"pruner": "l3norm", "config_list": []}, "pruner"),
        ({"pruner": "l1norm", "config_list": {"sparsity": 0.5}}, "config_list"),
        ({"pruner": "l1norm", "config_list": [], "device": "tpu"}, "device"),
        ({"pruner": "l1norm", "config_list": [], "input_shape": [28, "x"]}, "input_shape"),
        ({"pruner": "l1norm", "config_list": [], "input_shape": [784]}, "input_shape"),
        ({"pruner": "l1norm", "config_list": [], "speedup": "yes"}, "speedup"),
        ({"pruner": "l1norm", "config_list": [], "latency_runs": 0}, "latency_runs"),
        ({"pruner": "l1norm", "config_list": [], "seed": True}, "seed"),
        ({"pruner": "l1norm", "config_list": [], "dataset": "imagenet"}, "dataset"),
        ({"pruner": "l1norm", "config_list": [], "latency_dtype": "int8"}, "latency_dtype"),
    ],
)
def test_spec_errors_name_the_key(data: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        JobSpec.from_dict(data)
    assert info.value.context["key"] == key
    assert key in info.value.message


# --- a finished job ---------------------------------------------------------------------------


def test_job_shrinks_the_seed_net_as_nni_does(finished: tuple[JobResult, _Recorder, Path, Any]) -> None:
    result = finished[0]
    layers = {layer.name: layer for layer in result.layers}
    assert (layers["conv1"].in_after, layers["conv1"].out_after) == (1, 10)
    assert (layers["conv2"].in_after, layers["conv2"].out_after) == (10, 25)
    assert (layers["fc1"].in_after, layers["fc1"].out_after) == (400, 250)
    assert (layers["fc2"].in_before, layers["fc2"].in_after, layers["fc2"].out_after) == (500, 250, 10)
    assert result.metrics_before.params == 431_080 and result.metrics_after.params == 109_295
    assert result.metrics_after.macs < result.metrics_before.macs
    assert result.metrics_after.state_dict_bytes < result.metrics_before.state_dict_bytes
    # Under the default budget a batch size may be left out (named in latency_budget.skipped) when a
    # loaded machine stalls the first pass; before and after are timed at the same sizes either way.
    timed = [s.batch_size for s in result.metrics_after.latency]
    assert timed == [s.batch_size for s in result.metrics_before.latency] and timed[0] == 1
    skipped = json.loads(json.dumps(result.to_dict()))["latency_budget"]["skipped"]
    assert all(any(s.startswith(f"batch {bs}:") for s in skipped) for bs in {1, 8} - set(timed))
    assert result.speedup_applied and len(result.kept["conv1"]["out"]) == 10
    assert (
        result.checks["equivalence"]["max_abs_diff"]
        <= 1e-4 * result.checks["equivalence"]["output_scale"] + 1e-5
    )
    assert result.checks["reload"]["max_abs_diff"] == 0.0
    assert result.checks["onnx"]["max_abs_diff"] < 1e-4


def test_progress_is_monotonic_covers_every_stage_and_ends_at_100(
    finished: tuple[JobResult, _Recorder, Path, Any],
) -> None:
    calls = finished[1].calls
    percents = [p for _, p, _ in calls]
    assert percents == sorted(percents)
    assert percents[0] == 0.0 and percents[-1] == 100.0
    assert [s for s in dict.fromkeys(stage for stage, _, _ in calls)] == list(STAGES)


def test_artifacts_are_on_disk_with_matching_hashes(finished: tuple[JobResult, _Recorder, Path, Any]) -> None:
    result, _, out, _ = finished
    names = [a.name for a in result.artifacts]
    assert names == ["model.safetensors", "manifest.json", "model.onnx", "report.json"]
    media = {a.name: a.media_type for a in result.artifacts}
    assert (
        media["model.safetensors"] == "application/octet-stream" and media["model.onnx"] == "application/onnx"
    )
    for artifact in result.artifacts:
        data = Path(artifact.path).read_bytes()
        assert Path(artifact.path).parent == out.resolve()
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
        assert len(data) == artifact.size_bytes
    assert not (out / "_resume").exists()  # the resume checkpoint is removed once the job succeeds


def test_report_and_reloaded_artifact(finished: tuple[JobResult, _Recorder, Path, Any]) -> None:
    result, _, out, model = finished
    report = json.loads((out / "report.json").read_text())
    expected = result.to_dict()
    expected["artifacts"] = expected["artifacts"][:-1]  # the report cannot list its own hash
    del expected["timings"]["exporting"]  # the report is written while exporting runs
    assert report == json.loads(json.dumps(expected))
    assert report["metrics"]["before"]["params"] == 431_080
    reloaded = load_compressed(out)
    assert sum(p.numel() for p in reloaded.parameters()) == 109_295
    # The original model was not touched by the job.
    assert sum(p.numel() for p in model.parameters()) == 431_080
    assert model.conv1.weight.shape == (20, 1, 5, 5)


def test_json_of_the_result_is_complete(finished: tuple[JobResult, _Recorder, Path, Any]) -> None:
    data = json.loads(json.dumps(finished[0].to_dict()))
    assert set(data["metrics"]) == {"before", "after"}
    assert {"name", "path", "sha256", "size_bytes", "media_type"} == set(data["artifacts"][0])


def test_the_result_says_what_latency_budget_was_used_and_how_precise_each_figure_is(
    finished: tuple[JobResult, _Recorder, Path, Any],
) -> None:
    result = finished[0]
    budget = json.loads(json.dumps(result.to_dict()))["latency_budget"]
    # No latency_budget_s in the spec: 0.2 × the seconds of the stages before evaluating, ≥ 2 s.
    assert budget["source"].startswith("auto: 0.2 × the ") and budget["seconds"] >= 2.0
    assert budget["skipped"] == [] and not any("latency at" in note for note in result.notes)
    figures = result.metrics_before.latency + result.metrics_after.latency
    assert budget["spent_s"] == pytest.approx(sum(s.elapsed_s for s in figures), abs=1e-3)
    for s in figures:
        assert s.stopped in ("runs", "stable", "budget") and s.budget_s is not None and s.budget_s > 0
        assert s.runs >= 1 and s.iqr_ms == pytest.approx(s.q3_ms - s.q1_ms)


# --- other paths ------------------------------------------------------------------------------


def test_level_pruner_keeps_shapes_and_says_so(tmp_path: Path) -> None:
    spec = _spec(
        pruner="level", config_list=[{"sparsity": 0.5, "op_types": ["Linear", "Conv2d"]}], export_onnx=False
    )
    result = run_job(spec, model=_net(), architecture="mnist_net", out_dir=tmp_path)
    assert not result.speedup_applied and result.kept == {}
    assert any("no speedup" in note for note in result.notes)
    assert result.metrics_after.params == result.metrics_before.params
    assert result.metrics_after.sparsity["fc1"] == pytest.approx(0.5, abs=0.01)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kept"] == {} and manifest["structured"] is False
    assert [a.name for a in result.artifacts] == ["model.safetensors", "manifest.json", "report.json"]
    reloaded = load_compressed(tmp_path)
    assert float((reloaded.fc1.weight == 0).float().mean()) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("stop_before", ["pruning", "speedup", "evaluating", "exporting"])
def test_cancel_between_stages(tmp_path: Path, stop_before: str) -> None:
    seen: list[str] = []

    def progress(stage: str, percent: float, message: str | None = None) -> None:
        seen.append(stage)

    def should_stop() -> bool:
        # Polled before each stage; the stage reported last is the one that just finished.
        return bool(seen) and STAGES.index(seen[-1]) + 1 == STAGES.index(stop_before)

    with pytest.raises(JobCancelled) as info:
        run_job(
            _spec(),
            model=_net(),
            architecture="mnist_net",
            out_dir=tmp_path,
            progress=progress,
            should_stop=should_stop,
        )
    assert info.value.code == "cancelled" and info.value.context["stage"] == stop_before
    assert stop_before not in seen
    assert not (tmp_path / "report.json").exists()


def _cancel_after_pruning(out_dir: Path) -> None:
    """Runs the default job into ``out_dir`` and cancels it once pruning is done: what a resume finds."""
    seen: list[str] = []
    with pytest.raises(JobCancelled):
        run_job(
            _spec(),
            model=_net(),
            architecture="mnist_net",
            out_dir=out_dir,
            progress=lambda stage, pct, msg=None: seen.append(stage),
            should_stop=lambda: "pruning" in seen,  # stop once pruning has started (and so finished)
        )


def test_resume_reuses_saved_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cancel_after_pruning(tmp_path)
    assert (tmp_path / "_resume" / "masks.safetensors").is_file()

    import nncompress.pruners

    def no_pruning(*args: object, **kwargs: object) -> None:
        raise AssertionError("pruning must not run again on resume")

    monkeypatch.setattr(nncompress.pruners, "prune", no_pruning)
    result = run_job(_spec(), model=_net(), architecture="mnist_net", out_dir=tmp_path, resume_from="speedup")
    assert any(note.startswith("resumed") for note in result.notes)
    assert result.metrics_after.params == 109_295


def test_resume_with_another_spec_starts_over(tmp_path: Path) -> None:
    _cancel_after_pruning(tmp_path)
    other = _spec(seed=1, export_onnx=False)
    result = run_job(other, model=_net(), architecture="mnist_net", out_dir=tmp_path, resume_from="speedup")
    assert any("started over" in note for note in result.notes)


def test_wrong_input_shape_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        run_job(_spec(input_shape=[1, 3, 32, 32]), model=_net(), architecture="mnist_net", out_dir=tmp_path)
    assert info.value.context["key"] == "input_shape"


def test_model_without_architecture_needs_input_shape_and_exports_onnx(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        run_job(_spec(), model=_net(), architecture=None, out_dir=tmp_path)
    result = run_job(_spec(input_shape=[1, 1, 28, 28]), model=_net(), architecture=None, out_dir=tmp_path)
    assert any("model.onnx" in note for note in result.notes)
    assert "reload" not in result.checks and result.checks["onnx"]["max_abs_diff"] < 1e-4


def test_cuda_without_cuda_is_a_config_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError) as info:
        run_job(_spec(device="cuda"), model=_net(), architecture="mnist_net", out_dir=tmp_path)
    assert info.value.context["key"] == "device"


def test_accuracy_is_measured_on_eval_data(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.randn(40, 1, 28, 28)
    model = _net().eval()
    with torch.no_grad():
        labels = model(images).argmax(dim=1)  # the unpruned model is right on every example by construction
    labels[:10] = (labels[:10] + 1) % 10  # …except these ten
    result = run_job(
        _spec(export_onnx=False),
        model=model,
        architecture="mnist_net",
        out_dir=tmp_path,
        eval_data=[(images[:25], labels[:25]), (images[25:], labels[25:])],
    )
    assert result.accuracy is not None and result.accuracy["before"] == pytest.approx(30 / 40)
    assert 0.0 <= result.accuracy["after"] <= 1.0
    assert result.to_dict()["metrics"]["before"]["accuracy"] == pytest.approx(0.75)


def test_builtin_dataset_must_fit_the_model(tmp_path: Path) -> None:
    spec = JobSpec.from_dict(
        {"pruner": "l1norm", "config_list": [{"sparsity": 0.5}], "dataset": "mnist_subset"}
    )
    with pytest.raises(ConfigError) as info:
        run_job(spec, model=get("vgg_bn").build(), architecture="vgg_bn", out_dir=tmp_path)
    assert info.value.context["key"] == "dataset"


def test_an_onnx_upload_is_compressed_like_the_original(tmp_path: Path) -> None:
    from nncompress.io import export_onnx, load_model

    export_onnx(_net().eval(), torch.randn(1, 1, 28, 28), tmp_path / "upload.onnx")
    converted = load_model(tmp_path / "upload.onnx")
    result = run_job(
        _spec(input_shape=[1, 1, 28, 28]), model=converted, architecture=None, out_dir=tmp_path / "job"
    )
    # The converted graph keeps the layer names, so the seed's config selects the same layers.
    assert result.metrics_before.params == 431_080 and result.metrics_after.params == 109_295
    assert result.checks["onnx"]["max_abs_diff"] < 1e-4


def test_models_with_several_outputs_are_verified(tmp_path: Path) -> None:
    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3)
            self.a = torch.nn.Linear(8, 3)
            self.b = torch.nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return {"a": self.a(pooled), "b": self.b(pooled)}

    spec = _spec(
        config_list=[{"sparsity_per_layer": 0.5, "op_names": ["conv"]}],
        input_shape=[1, 1, 8, 8],
        export_onnx=False,
    )
    result = run_job(spec, model=TwoHeads(), architecture=None, out_dir=tmp_path)
    assert result.checks["equivalence"]["inputs"] == 3
    layers = {layer.name: layer for layer in result.layers}
    assert layers["conv"].out_after == 4 and layers["a"].in_after == 4 and layers["b"].in_after == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_job_measures_latency_on_the_gpu(tmp_path: Path) -> None:
    spec = _spec(device="cuda", latency_runs=20, latency_batch_sizes=[1, 64], latency_dtype="bfloat16")
    result = run_job(spec, model=_net(), architecture="mnist_net", out_dir=tmp_path)
    for metrics in (result.metrics_before, result.metrics_after):
        assert metrics.device.startswith("cuda:") and metrics.dtype == "bfloat16"
        assert {s.method for s in metrics.latency} == {"cuda_graph"}
    # The artifacts are the float32 CPU model, reloadable anywhere.
    assert result.checks["reload"]["max_abs_diff"] == 0.0


def test_both_artifacts_reload_and_agree(finished: tuple[JobResult, _Recorder, Path, Any]) -> None:
    from nncompress.io import load_model

    out = finished[2]
    from_weights = load_compressed(out)  # registry architecture + kept indices + safetensors
    from_onnx = load_model(out / "model.onnx")  # the ONNX file, converted back to a module
    x = torch.randn(6, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(from_onnx(x), from_weights(x), atol=1e-5)
