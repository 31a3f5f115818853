"""run_job as a pipeline: one stage function per name in STAGES, each timed and announced as it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nncompress.models import get
from nncompress.pipeline import STAGES, JobCancelled, JobSpec, run_job
from nncompress.pipeline.result import LatencyBudget
from nncompress.pipeline.stages import SPANS, spans_for
from nncompress.pipeline.steps import PIPELINE
from nncompress.pipeline.steps.report import latency_budget

_SPEC = {
    "pruner": "l1norm",
    "config_list": [
        {"sparsity_per_layer": 0.5, "op_types": ["Linear", "Conv2d"]},
        {"exclude": True, "op_names": ["fc2"]},
    ],
    "latency_runs": 2,
    "latency_batch_sizes": [1],
    "export_onnx": False,
}


def test_every_stage_has_one_function_in_order() -> None:
    assert tuple(PIPELINE) == STAGES
    assert tuple(SPANS) == STAGES and tuple(spans_for(finetune_epochs=2, quantize=True)) == STAGES
    assert SPANS["loading"][0] == 0.0 and SPANS["exporting"][1] == 100.0


def test_stages_are_timed_and_a_resumed_job_announces_its_reused_masks(tmp_path: Path) -> None:
    spec = JobSpec.from_dict(_SPEC)
    torch.manual_seed(0)
    model = get("mnist_net").build()
    first = run_job(spec, model=model, architecture="mnist_net", out_dir=tmp_path / "a")
    assert tuple(first.timings) == STAGES and all(t >= 0.0 for t in first.timings.values())

    # An attempt stopped after pruning leaves its masks; the retry reuses them and says so up front.
    seen: list[str] = []
    out = tmp_path / "b"
    with pytest.raises(JobCancelled):
        run_job(
            spec,
            model=model,
            architecture="mnist_net",
            out_dir=out,
            progress=lambda stage, pct, msg=None: seen.append(stage),
            should_stop=lambda: "pruning" in seen,
        )
    starts: dict[str, str | None] = {}

    def record(stage: str, percent: float, message: str | None = None) -> None:
        starts.setdefault(stage, message)

    resumed = run_job(
        spec, model=model, architecture="mnist_net", out_dir=out, progress=record, resume_from="speedup"
    )
    assert starts["pruning"] == "reused saved masks"
    assert resumed.kept == first.kept and resumed.metrics_after.params == first.metrics_after.params


@pytest.mark.parametrize(
    ("prior_s", "seconds"),
    [(0.5, 2.0), (20.0, 4.0), (1000.0, 30.0)],  # the floor, 0.2 × the job's work, the cap
)
def test_the_default_latency_budget_is_a_share_of_the_stages_before_it(
    prior_s: float, seconds: float
) -> None:
    spec = JobSpec.from_dict(_SPEC)
    assert spec.latency_budget_s is None
    budget = latency_budget(spec, {"loading": prior_s / 4, "pruning": prior_s * 3 / 4})
    assert budget.seconds == seconds
    assert budget.source == f"auto: 0.2 × the {prior_s:.1f} s of the stages before evaluating, within 2-30 s"


def test_a_latency_budget_in_the_options_is_used_as_given() -> None:
    spec = JobSpec.from_dict({**_SPEC, "latency_budget_s": 8})
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert latency_budget(spec, {"pruning": 1000.0}) == LatencyBudget(seconds=8.0, source="options")
