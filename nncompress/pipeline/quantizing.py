"""The ``quantizing`` stage: an int8 ONNX model next to the fp32 one, measured in the same run.

The artifact is ``model.int8.onnx`` (onnxruntime runs it; no project code needed). Latency of fp32
and int8 is timed round-robin at the job's batch sizes, so load on a shared machine hits both alike;
accuracy (top-1/top-5/loss) of the int8 model is measured on the job's validation part.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.finetune.evaluate import score_batches
from nncompress.finetune.spec import FinetuneSpec
from nncompress.pipeline.result import Artifact, file_artifact
from nncompress.pipeline.spec import JobSpec
from nncompress.pipeline.stages import Stage
from nncompress.pipeline.training import JobData, Publish, run_finetuning

__all__ = ["INT8_FILE", "run_quantizing"]

INT8_FILE = "model.int8.onnx"
_STEM = "model"
_EVAL_BATCH = 256


def run_quantizing(
    model: nn.Module,
    original: nn.Module,
    spec: JobSpec,
    data: JobData | None,
    example: torch.Tensor,
    out: Path,
    *,
    stage: Stage,
    should_stop: Callable[[], bool],
    checkpoint_dir: Path,
    record: dict[str, Any],
    publish: Publish,
) -> list[Artifact]:
    """Quantizes ``model`` (the compressed, fine-tuned fp32 model) and measures the int8 result.

    QAT fine-tunes a fake-quantized copy for one epoch of the job's fine-tuning settings (the fp32
    model was already fine-tuned by the ``finetuning`` stage), then converts it.

    Returns:
        The int8 artifact(s) written into ``out``; ``record`` receives the measurements.
    """
    from nncompress.quantize import quantize

    qspec = spec.quantize
    assert qspec is not None
    calibration = None
    if data is not None and qspec.mode in ("static", "qat"):
        calibration = data.train.batches(64, limit=qspec.calibration_batches)
    train_fn = None
    if qspec.mode == "qat":
        assert data is not None and spec.finetune is not None
        qat_spec = FinetuneSpec(**{**spec.finetune.to_dict(), "epochs": 1})
        qat_record: dict[str, Any] = {}
        record["qat"] = qat_record

        def train_fn(fake_quantized: nn.Module) -> None:
            run_finetuning(
                fake_quantized,
                original,
                data,
                qat_spec,
                stage=stage,
                should_stop=should_stop,
                checkpoint_dir=checkpoint_dir,
                record=qat_record,
                publish=publish,
                prefix="QAT ",
            )

    stage.update(0.05, f"quantizing ({qspec.mode}, {qspec.format})")
    result = quantize(
        copy.deepcopy(model).cpu().eval(),
        example,
        qspec,
        calibration=calibration,
        train_fn=train_fn,
        out_dir=out,
        name=_STEM,
    )
    stage.update(0.6, "timing fp32 and int8 side by side")
    labelled = data.val.batches(_EVAL_BATCH) if data is not None else None
    measured = result.measure(
        labelled, example_inputs=example, batch_sizes=spec.latency_batch_sizes, runs=spec.latency_runs
    )
    summary = {k: v for k, v in result.to_dict().items() if not k.endswith("_path")}
    record.update(
        {
            "artifact": INT8_FILE,
            **summary,
            "measured": measured.to_dict(),
            "int8": onnx_evaluate(result.onnx_path, data) if data is not None else None,
        }
    )
    publish()
    # model.onnx (the exporting stage) is the fp32 artifact; the quantizer's own fp32 graph was only
    # the baseline of the timing above, whose bytes are recorded.
    result.fp32_onnx_path.unlink(missing_ok=True)
    artifacts = [file_artifact(result.onnx_path, "application/onnx")]
    if result.torch_path is not None:
        artifacts.append(file_artifact(result.torch_path, "application/octet-stream"))
    return artifacts


def onnx_evaluate(path: Path, data: JobData) -> dict[str, Any]:
    """Top-1, top-5 (with ≥ 5 classes) and mean cross-entropy of an ONNX classifier on the validation part.

    Scored by :class:`~nncompress.finetune.evaluate.Scorer`, as the fp32 model is, so fp32 and int8
    compare like with like.

    Args:
        path: the ONNX model (int8 or fp32) to run in onnxruntime.
        data: the job's data; its validation part is scored.

    Returns:
        ``top1``, ``top5`` (None with fewer than 5 classes), ``loss`` (None when not finite: JSON has
        no NaN) and ``samples``.
    """
    from nncompress.quantize import load_quantized

    session = load_quantized(path, threads=torch.get_num_threads())

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(session.run(x.numpy())[0]))

    figures = score_batches(forward, data.val.batches(_EVAL_BATCH), data.val.num_classes).to_dict()
    if not math.isfinite(figures["loss"]):
        figures["loss"] = None
    return figures
