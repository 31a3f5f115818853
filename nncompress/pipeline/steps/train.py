"""The ``finetuning`` and ``quantizing`` stages: both train or calibrate the compressed model on the
job's data set, and pass at once when the job does not ask for them."""

from __future__ import annotations

from typing import Any

from nncompress.pipeline.stages import Stage
from nncompress.pipeline.state import JobState
from nncompress.pipeline.training import run_finetuning

__all__ = ["finetune", "finetune_message", "quantize", "quantize_message"]


def finetune_message(state: JobState) -> str:
    """What the ``finetuning`` stage says as it starts."""
    return "fine-tuning" if state.spec.finetune else "not asked"


def finetune(state: JobState, stage: Stage) -> None:
    """Fine-tunes the compressed model in place (a scheduled job already fine-tuned every step)."""
    spec = state.spec
    if state.scheduled is not None:
        state.live["finetune"] = _scheduled_finetune(state.scheduled)
        return
    if spec.finetune is None or state.job_data is None:
        return
    state.live["finetune"] = {}
    # Without a speedup the pruned weights are zeros in full-size layers: keep them pruned while
    # training, as masks, so fine-tuning cannot grow them back.
    kept_masks = state.masks if state.masks is not None and not state.kept else None
    if kept_masks is not None:
        from nncompress.pruners.masks import apply_masks

        apply_masks(state.compressed, kept_masks)
    run_finetuning(
        state.compressed,
        state.original,
        state.job_data,
        spec.finetune,
        stage=stage,
        should_stop=state.request.should_stop,
        checkpoint_dir=state.resume_dir / "finetune",
        record=state.live["finetune"],
        publish=state.publish,
    )
    if kept_masks is not None:
        from nncompress.pruners.masks import remove_masks

        remove_masks(state.compressed, leave_masked=True)


def quantize_message(state: JobState) -> str:
    """What the ``quantizing`` stage says as it starts."""
    return "quantizing" if state.spec.quantize else "not asked"


def quantize(state: JobState, stage: Stage) -> None:
    """Quantizes the compressed model to int8 and measures it; the artifacts join the export."""
    if state.spec.quantize is None:
        return
    from nncompress.pipeline.quantizing import run_quantizing

    state.live["quantized"] = {}
    state.quantized_artifacts = run_quantizing(
        state.compressed,
        state.original,
        state.spec,
        state.job_data,
        state.example,
        state.request.out,
        stage=stage,
        should_stop=state.request.should_stop,
        checkpoint_dir=state.resume_dir / "qat",
        record=state.live["quantized"],
        publish=state.publish,
    )


def _scheduled_finetune(scheduled: Any) -> dict[str, Any]:
    """The fine-tuning record of a scheduled job: every step fine-tuned, the chosen step's epochs shown."""
    chosen = scheduled.steps[scheduled.chosen_step - 1] if scheduled.chosen_step else None
    return {
        "original": scheduled.baseline.to_dict(),
        "finetuned": chosen.val.to_dict() if chosen is not None else scheduled.baseline.to_dict(),
        "epochs": list(chosen.finetune) if chosen is not None else [],
        "scheduled": True,
        "chosen_step": scheduled.chosen_step,
    }
