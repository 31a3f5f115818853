"""The compression pipeline: the one function a worker (or the CLI) calls to run a job.

``run_job`` takes a loaded model and a validated :class:`JobSpec`, runs the stages
loading → pruning → speedup → verifying → finetuning → quantizing → evaluating → exporting (a stage
the job does not ask for passes at once), reports progress as a percentage
of the whole job, stops between stages when asked, and writes the artifacts (safetensors weights +
manifest, ONNX, JSON report) into ``out_dir``. The service stays thin: it loads the job row, calls
this, and writes the result back.

Modules: ``spec`` (the validated job), ``stages`` (the stage names, their order and progress spans,
cancellation), ``run`` (``run_job``: the stage functions called in order on one job state),
``state`` (what the stages pass on), ``steps`` (the stage functions), ``checks`` (equivalence and
accuracy), ``result`` (what a job returns), ``checkpoint`` (resuming after an interrupted attempt),
``training`` (the job's data set, fine-tuning, scheduled pruning), ``quantizing`` (the int8 artifact
and its measurements).

Example:
    >>> from nncompress.models import get
    >>> spec = JobSpec.from_dict({"pruner": "l1norm", "config_list": [{"sparsity": 0.5}]})
    >>> result = run_job(spec, model=get("mnist_net").build(), architecture="mnist_net",
    ...                  out_dir="out/")  # doctest: +SKIP
    >>> [a.name for a in result.artifacts]  # doctest: +SKIP
    ['model.safetensors', 'manifest.json', 'model.onnx', 'report.json']
"""

from nncompress.pipeline.result import Artifact, JobResult, LayerChange
from nncompress.pipeline.run import run_job
from nncompress.pipeline.spec import (
    BUILTIN_DATASETS,
    LATENCY_DTYPES,
    SCHEDULE_KINDS,
    JobOptions,
    JobSpec,
    ScheduleSpec,
    pruner_names,
)
from nncompress.pipeline.stages import STAGES, JobCancelled

__all__ = [
    "BUILTIN_DATASETS",
    "LATENCY_DTYPES",
    "SCHEDULE_KINDS",
    "STAGES",
    "Artifact",
    "JobCancelled",
    "JobOptions",
    "JobResult",
    "JobSpec",
    "LayerChange",
    "ScheduleSpec",
    "pruner_names",
    "run_job",
]
