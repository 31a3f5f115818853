"""The default job function: load the uploaded model and run the compression pipeline on it.

Runs only inside the job process (``workers.child``): this is where a model file is read, with
``settings.allow_pickle`` deciding whether a pickled module may be unpickled, and where torch loads.
"""

from __future__ import annotations

from pathlib import Path

from app.db.models import Model
from app.storage import Storage
from workers.child import JobContext, JobOutput


def resume_stage(last_finished: str | None, stages: tuple[str, ...]) -> str | None:
    """The stage an interrupted attempt was running: the one after the last it finished."""
    if last_finished not in stages:
        return None
    index = stages.index(last_finished)  # type: ignore[arg-type]
    return stages[index + 1] if index + 1 < len(stages) else None


def run_pipeline_job(ctx: JobContext) -> JobOutput:
    """Loads the job's model from storage and compresses it as its spec says.

    Engine errors (bad config, unsafe or broken model file, failed verification) propagate with
    their stable ``code``; ``workers.child`` records them on the job.
    """
    from nncompress.io.intake import load_model
    from nncompress.pipeline import STAGES, JobSpec, run_job

    ctx.progress("loading", 0.0, "loading the model")
    with ctx.session_factory() as session:
        model_row = session.get(Model, ctx.job.model_id)
        if model_row is None:
            raise RuntimeError(f"model {ctx.job.model_id} of job {ctx.job_id} does not exist")
        session.expunge(model_row)
    storage = Storage(Path(ctx.settings.storage_dir))
    model = load_model(
        storage.path(model_row.storage_key),
        fmt=model_row.format,
        architecture=model_row.architecture,
        allow_pickle=ctx.settings.allow_pickle,
    )
    spec = JobSpec.from_dict(ctx.job.spec)
    result = run_job(
        spec,
        model=model,
        architecture=model_row.architecture,
        out_dir=ctx.out_dir,
        progress=ctx.progress,
        should_stop=ctx.should_stop,
        resume_from=resume_stage(ctx.resume_from, STAGES),
    )
    report = result.to_dict()
    return JobOutput(
        metrics=report["metrics"],
        result=report,
        artifacts=[
            ctx.artifact(Path(a.path), name=a.name, media_type=a.media_type, sha256=a.sha256)
            for a in result.artifacts
        ],
    )
