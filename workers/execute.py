"""The default job function: load the uploaded model and run the compression pipeline on it.

Runs only inside the job process (``workers.child``): this is where a model file is read, with
``settings.allow_pickle`` deciding whether a pickled module may be unpickled, and where torch loads.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from core.db.models import Dataset, Job, Model
from core.db.types import utcnow
from core.storage import Storage, open_storage
from workers import state
from workers.child import JobContext, JobOutput

if TYPE_CHECKING:
    from torch import nn

    from nncompress.datasets import LabelledDataset
    from nncompress.io.hf_dir import LoadedHf

log = logging.getLogger(__name__)


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
    from nncompress.pipeline import STAGES, JobSpec, run_job

    # Fetching the model and data set from storage is part of the engine's first stage (loading);
    # named from its list, so the worker reports no stage the engine does not know.
    loading = STAGES[0]
    ctx.progress(loading, 0.0, "loading the model")
    with ctx.session_factory() as session:
        model_row = session.get(Model, ctx.job.model_id)
        if model_row is None:
            raise RuntimeError(f"model {ctx.job.model_id} of job {ctx.job_id} does not exist")
        session.expunge(model_row)
    storage = open_storage(ctx.settings)
    storage.ensure_dirs()
    upload = load_upload(model_row, storage, allow_pickle=ctx.settings.allow_pickle)
    spec = JobSpec.from_dict(ctx.job.spec)
    dataset, val_dataset = (None, None)
    if spec.dataset_id is not None:
        ctx.progress(loading, 1.0, "loading the data set")
        dataset, val_dataset = load_job_dataset(ctx, storage, spec.dataset_id)
    result = run_job(
        spec,
        model=upload.model,
        architecture=upload.architecture,
        architecture_kwargs=upload.architecture_kwargs,
        out_dir=ctx.out_dir,
        progress=ctx.progress,
        should_stop=ctx.should_stop,
        resume_from=resume_stage(ctx.resume_from, STAGES),
        dataset=dataset,
        val_dataset=val_dataset,
        on_metrics=lambda metrics: write_live_metrics(ctx, metrics),
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


@dataclass
class LoadedUpload:
    """An uploaded model loaded in the job process, with what its artifact's manifest records.

    Args:
        model: the module, in eval mode.
        architecture: the name the artifact is rebuilt from: the upload's registry architecture,
            ``hf/<Class>`` or ``timm/<model>`` for a model folder, None for ONNX and pickles.
        architecture_kwargs: the build arguments to record (a folder's config or timm model_args);
            None lets the pipeline work them out for registry architectures.
    """

    model: nn.Module
    architecture: str | None
    architecture_kwargs: dict[str, Any] | None = None


def load_upload(model_row: Model, storage: Storage, *, allow_pickle: bool) -> LoadedUpload:
    """Loads an uploaded model as its format says, unpacking folders into a temp dir first.

    A Hugging Face model sent as parts (weights + config.json) is put back together as a folder; an
    ONNX model with external data is extracted (its .onnx and the data files it names, nothing else)
    and imported with that folder as the only place its tensors may come from. A model folder
    (transformers or timm) also yields the architecture and build arguments its compressed artifact
    is rebuilt from without the service (``nncompress.io.library_rebuild.recorded_build``).
    """
    if model_row.format == "hf_dir":
        from nncompress.io.library_rebuild import recorded_build

        loaded = _load_hf(model_row, storage)
        summary = loaded.summary
        architecture, kwargs = recorded_build(
            summary.library, summary.class_name, loaded.model, summary.config
        )
        return LoadedUpload(loaded.model.eval(), architecture, kwargs)
    model = load_uploaded_model(model_row, storage, allow_pickle=allow_pickle)
    return LoadedUpload(model, model_row.architecture)


def _load_hf(model_row: Model, storage: Storage) -> LoadedHf:
    from nncompress.io.hf_dir import load_hf_dir

    path = storage.local_path(model_row.storage_key)
    config_key = (model_row.details or {}).get("config_key")
    if not config_key:
        return load_hf_dir(path)  # a zip: extracted to a temp folder and deleted by the loader
    with tempfile.TemporaryDirectory(dir=storage.path("tmp"), prefix="hf-") as tmp:
        folder = Path(tmp)
        os.link(path, folder / "model.safetensors")  # a hard link: the reader refuses symlinks
        os.link(storage.local_path(config_key), folder / "config.json")
        return load_hf_dir(folder)


def load_uploaded_model(model_row: Model, storage: Storage, *, allow_pickle: bool) -> nn.Module:
    """Loads an uploaded model as its format says (see :func:`load_upload`), the module alone."""
    from nncompress.io.intake import load_model

    if model_row.format == "hf_dir":
        return _load_hf(model_row, storage).model.eval()
    if model_row.format == "onnx_zip":
        from nncompress.io.onnx_import import load_onnx
        from nncompress.io.onnx_zip import extract_onnx_zip

        with tempfile.TemporaryDirectory(dir=storage.path("tmp"), prefix="onnx-") as tmp:
            onnx_path = extract_onnx_zip(storage.local_path(model_row.storage_key), Path(tmp))
            return load_onnx(onnx_path, external_data_dir=Path(tmp)).eval()
    return load_model(
        storage.local_path(model_row.storage_key),
        fmt=model_row.intake_format,
        architecture=model_row.architecture,
        allow_pickle=allow_pickle,
    )


def load_job_dataset(
    ctx: JobContext, storage: Storage, dataset_id: str
) -> tuple[LabelledDataset, LabelledDataset | None]:
    """Loads the job's uploaded data set (and its validation part, when it has one) from storage.

    The API validated the same files with the same checks and caps at upload, streaming; they are
    read again here, under the deployment's caps again (checked from headers before decoding),
    because only the job process may hold the samples in memory.
    """
    from core.dataset_limits import dataset_limits
    from nncompress.datasets import DatasetError, load_dataset

    limits = dataset_limits(ctx.settings)

    with ctx.session_factory() as session:
        row = session.get(Dataset, dataset_id)
        if row is None or row.tenant_id != ctx.job.tenant_id:
            raise DatasetError(
                f"data set {dataset_id} of job {ctx.job_id} does not exist", dataset_id=dataset_id
            )
        session.expunge(row)
    normalize = (row.normalize["mean"], row.normalize["std"]) if row.normalize else None

    def part(images: str, labels: str) -> LabelledDataset:
        labels_key = row.files[labels]["storage_key"] if labels in row.files else None
        return load_dataset(
            storage.local_path(row.files[images]["storage_key"]),
            labels_path=storage.local_path(labels_key) if labels_key else None,
            format=row.format,
            normalize=normalize,
            limits=limits,
        )

    return part("file", "labels"), (part("val_file", "val_labels") if "val_file" in row.files else None)


def write_live_metrics(ctx: JobContext, metrics: dict[str, Any]) -> None:
    """Stores the stage metrics measured so far (epochs, scheduled steps) on the job while it runs.

    Only while this worker holds the job, like every other write of the job process; a database
    blip loses one update, never the job (the final metrics are written when it ends).
    """
    try:
        with ctx.session_factory() as session:
            session.execute(
                update(Job)
                .where(
                    Job.id == ctx.job_id,
                    Job.lease_owner == ctx.worker_id,
                    Job.status.in_(state.ACTIVE_STATUSES),
                )
                .values(metrics=metrics, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            session.commit()
    except SQLAlchemyError:
        log.warning("job %s: could not write live metrics", ctx.job_id, exc_info=True)
