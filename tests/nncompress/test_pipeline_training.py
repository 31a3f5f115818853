"""run_job's data-driven stages on the trained seed Net and the shipped MNIST subset.

Fine-tuning (with distillation) after pruning, scheduled AGP pruning with an accuracy budget,
int8 quantization (alone and after pruning), cancellation between steps, and resume from the last
finished epoch's checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nncompress.datasets import DatasetError, from_arrays
from nncompress.errors import ConfigError
from nncompress.models import get
from nncompress.pipeline import STAGES, JobCancelled, JobSpec, run_job

SEED_CONFIG = [
    {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]
FAST = {"latency_runs": 2, "latency_batch_sizes": [1, 8], "export_onnx": False}


def _trained() -> torch.nn.Module:
    from nncompress.data import mnist_net_weights_path

    net = get("mnist_net").build()
    net.load_state_dict(load_file(str(mnist_net_weights_path())))
    return net.eval()


def _spec(**overrides: Any) -> JobSpec:
    data: dict[str, Any] = {"pruner": "l1norm", "config_list": SEED_CONFIG, "dataset": "mnist_subset", **FAST}
    data.update(overrides)
    return JobSpec.from_dict(data)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str | None]] = []
        self.metrics: list[dict[str, Any]] = []

    def __call__(self, stage: str, percent: float, message: str | None = None) -> None:
        self.calls.append((stage, percent, message))


# --- spec -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"finetune": {"epochs": 0}}, "finetune.epochs"),
        ({"finetune": {"optimiser": "sgd"}}, "finetune.optimiser"),
        ({"finetune": {"distillation": {"temperature": 0}}}, "finetune.distillation.temperature"),
        ({"schedule": {"kind": "cubic"}, "finetune": {}}, "schedule.kind"),
        ({"schedule": {"steps": 0}, "finetune": {}}, "schedule.steps"),
        ({"schedule": {"accuracy_budget": -1}, "finetune": {}}, "schedule.accuracy_budget"),
        ({"schedule": {}}, "finetune"),
        ({"quantize": {"mode": "int4"}}, "quantize.mode"),
        ({"quantize": {"mode": "qat"}}, "quantize.mode"),
        ({"quantize": {"config_list": [{"quant_dtype": "int3"}]}}, "quantize.config_list[0]"),
        (
            {"quantize": {"config_list": [{"op_types": ["Linear"], "quant_dtype": "int3"}]}},
            "quantize.config_list[0].quant_dtype",
        ),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"dataset_id": "abc"}, "dataset_id"),  # with the built-in dataset as well
    ],
)
def test_spec_errors_name_the_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _spec(**extra)
    assert info.value.context["key"] == key, info.value.message


def test_a_job_without_pruner_must_quantize_or_finetune() -> None:
    with pytest.raises(ConfigError) as info:
        JobSpec.from_dict({"pruner": None})
    assert info.value.context["key"] == "pruner"
    spec = JobSpec.from_dict({"pruner": None, "quantize": {"mode": "dynamic"}})
    assert JobSpec.from_dict(spec.to_dict()) == spec and not spec.prunes and spec.config_list == ()


def test_training_without_data_is_refused_when_the_job_runs(tmp_path: Path) -> None:
    spec = JobSpec.from_dict({"pruner": "l1norm", "config_list": SEED_CONFIG, "finetune": {}, **FAST})
    with pytest.raises(ConfigError) as info:
        run_job(spec, model=_trained(), architecture="mnist_net", out_dir=tmp_path)
    assert info.value.context["key"] == "dataset_id"


def test_a_data_set_that_does_not_fit_the_model_fails_with_its_message(tmp_path: Path) -> None:
    rgb = from_arrays(np.zeros((20, 3, 28, 28), np.float32), np.arange(20) % 10)
    with pytest.raises(DatasetError, match="samples have 3 channel"):
        run_job(
            _spec(dataset=None, finetune={}),
            model=_trained(),
            architecture="mnist_net",
            out_dir=tmp_path,
            dataset=rgb,
        )


# --- fine-tuning ----------------------------------------------------------------------------------


def test_finetuning_with_distillation_recovers_accuracy_and_records_every_epoch(tmp_path: Path) -> None:
    recorder = _Recorder()
    # 80% of the channels gone: the pruned model drops from 97% to 62% on these 300 held-out images.
    harsh = [
        {"sparsity_per_layer": 0.8, "op_types": ["Linear", "Conv2d"]},
        {"exclude": True, "op_names": ["fc2"]},
    ]
    spec = _spec(
        config_list=harsh,
        val_fraction=0.3,
        finetune={
            "epochs": 2,
            "lr": 0.01,
            "batch_size": 32,
            "distillation": {"weight": 0.5, "temperature": 4},
        },
    )
    result = run_job(
        spec,
        model=_trained(),
        architecture="mnist_net",
        out_dir=tmp_path,
        progress=recorder,
        on_metrics=recorder.metrics.append,
    )
    ft = result.to_dict()["metrics"]["finetune"]
    assert [e["epoch"] for e in ft["epochs"]] == [1, 2] and ft["distillation"] is True
    assert ft["original"]["top1"] > 0.9
    # Accuracy falls with pruning; fine-tuning wins most of it back.
    assert ft["pruned"]["top1"] < ft["original"]["top1"] - 0.1
    assert ft["finetuned"]["top1"] > ft["pruned"]["top1"] + 0.1, ft
    assert ft["resumed_from_epoch"] == 0 and ft["finetuned"]["top5"] is not None
    assert result.to_dict()["metrics"]["data"]["train_samples"] == 700
    # Live: the first epoch was published before the second ran.
    assert any(len(m.get("finetune", {}).get("epochs", [])) == 1 for m in recorder.metrics)
    messages = [m for stage, _, m in recorder.calls if stage == "finetuning" and m and m.startswith("epoch")]
    assert messages and "step" in messages[0] and "loss" in messages[0] and "eta" in messages[-1]
    assert [s for s in dict.fromkeys(stage for stage, _, _ in recorder.calls)] == list(STAGES)
    percents = [p for _, p, _ in recorder.calls]
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert not (tmp_path / "_resume").exists()  # checkpoints are removed after export


def test_cancel_stops_between_steps_and_a_retry_resumes_from_the_last_epoch(tmp_path: Path) -> None:
    spec = _spec(finetune={"epochs": 2, "lr": 0.01, "batch_size": 64})
    stop = {"now": False}

    def progress(stage: str, percent: float, message: str | None = None) -> None:
        # Stop in the second epoch, after the first epoch's checkpoint was written.
        if message and message.startswith("epoch 2/2 step 3/"):
            stop["now"] = True

    with pytest.raises(JobCancelled) as info:
        run_job(
            spec,
            model=_trained(),
            architecture="mnist_net",
            out_dir=tmp_path,
            progress=progress,
            should_stop=lambda: stop["now"],
        )
    # Reported after step 3, so the stop comes before step 4.
    assert info.value.context["finished_epochs"] == 1 and info.value.context["step"] == 4
    result = run_job(
        spec, model=_trained(), architecture="mnist_net", out_dir=tmp_path, resume_from="finetuning"
    )
    ft = result.stage_metrics["finetune"]
    assert ft["resumed_from_epoch"] == 1 and len(ft["epochs"]) == 2


# --- scheduled pruning ----------------------------------------------------------------------------


def test_agp_schedule_records_every_step(tmp_path: Path) -> None:
    spec = _spec(
        schedule={"kind": "agp", "steps": 2},
        finetune={"epochs": 1, "lr": 0.01},
        export_onnx=True,
    )
    result = run_job(spec, model=_trained(), architecture="mnist_net", out_dir=tmp_path)
    schedule = result.stage_metrics["schedule"]
    steps = schedule["steps"]
    assert [s["step"] for s in steps] == [1, 2] and schedule["chosen_step"] == 2
    assert steps[0]["sparsity"] < steps[1]["sparsity"] and steps[0]["params"] > steps[1]["params"]
    assert all(0.0 <= s["val"]["top1"] <= 1.0 for s in steps)
    assert result.metrics_after.params == steps[-1]["params"] < result.metrics_before.params
    assert result.checks["reload"]["max_abs_diff"] == 0.0  # the manifest's composed kept indices rebuild it


def test_accuracy_budget_stops_at_the_last_step_within_it(tmp_path: Path) -> None:
    # 95% of the channels at the end: the last steps cannot stay within 0.5 points.
    config = [
        {"sparsity_per_layer": 0.95, "op_types": ["Linear", "Conv2d"]},
        {"exclude": True, "op_names": ["fc2"]},
    ]
    spec = _spec(
        config_list=config,
        schedule={"kind": "linear", "steps": 3, "accuracy_budget": 0.5},
        finetune={"epochs": 1, "lr": 0.01},
    )
    result = run_job(spec, model=_trained(), architecture="mnist_net", out_dir=tmp_path)
    schedule = result.stage_metrics["schedule"]
    assert not schedule["steps"][-1]["within_budget"]
    assert schedule["chosen_step"] == len(schedule["steps"]) - 1
    assert schedule["stopped_early"] == (len(schedule["steps"]) < 3)
    if schedule["chosen_step"]:
        assert result.metrics_after.params == schedule["steps"][schedule["chosen_step"] - 1]["params"]
    else:
        assert result.metrics_after.params == result.metrics_before.params


# --- quantization ---------------------------------------------------------------------------------


def test_quantize_only_job_writes_an_int8_model_onnxruntime_runs(tmp_path: Path) -> None:
    from nncompress.quantize import load_quantized

    spec = JobSpec.from_dict(
        {"pruner": None, "dataset": "mnist_subset", "quantize": {"mode": "static"}, **FAST}
    )
    result = run_job(spec, model=_trained(), architecture="mnist_net", out_dir=tmp_path)
    names = [a.name for a in result.artifacts]
    assert names == ["model.safetensors", "manifest.json", "model.int8.onnx", "report.json"]
    assert result.artifact("model.int8.onnx").media_type == "application/onnx"
    assert not (tmp_path / "model.fp32.onnx").exists()
    q = result.stage_metrics["quantized"]
    assert q["bytes"]["int8_onnx"] < q["bytes"]["fp32_onnx"] / 3
    assert set(q["measured"]["latency_ms"]) == {"1", "8"}
    assert set(q["measured"]["latency_ms"]["8"]) >= {"fp32_onnx", "int8_onnx"}
    assert q["int8"]["top1"] > 0.9 and q["measured"]["accuracy"]["agreement"] > 0.95
    assert result.metrics_after.params == result.metrics_before.params
    logits = load_quantized(tmp_path / "model.int8.onnx")(torch.randn(3, 1, 28, 28))
    assert logits.shape == (3, 10)


def test_prune_finetune_quantize_job(tmp_path: Path) -> None:
    spec = _spec(
        finetune={"epochs": 1, "lr": 0.01},
        quantize={"mode": "dynamic", "config_list": [{"op_types": ["Linear"]}]},
        export_onnx=True,
    )
    result = run_job(spec, model=_trained(), architecture="mnist_net", out_dir=tmp_path)
    names = [a.name for a in result.artifacts]
    assert names == ["model.safetensors", "manifest.json", "model.onnx", "model.int8.onnx", "report.json"]
    metrics = result.to_dict()["metrics"]
    assert metrics["quantized"]["int8"]["top1"] > 0.8
    assert metrics["finetune"]["finetuned"]["top1"] >= metrics["finetune"]["pruned"]["top1"]
    assert metrics["after"]["params"] < metrics["before"]["params"]
