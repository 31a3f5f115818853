"""The job spec: what a compression job asks for, validated key by key.

The service stores ``JobSpec.to_dict()`` on the job row and the worker rebuilds it with
``JobSpec.from_dict``; every invalid value is a :class:`~nncompress.errors.ConfigError` whose
``context['key']`` names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from nncompress.errors import ConfigError
from nncompress.finetune.spec import FinetuneSpec
from nncompress.pruners.registry import PRUNERS
from nncompress.quantize.spec import QuantSpec
from nncompress.specs import Int, Number, Spec

__all__ = [
    "BUILTIN_DATASETS",
    "INPUT_DTYPES",
    "LATENCY_BUDGET_CAP_S",
    "LATENCY_BUDGET_FLOOR_S",
    "LATENCY_BUDGET_SHARE",
    "LATENCY_DTYPES",
    "SCHEDULE_KINDS",
    "JobOptions",
    "JobSpec",
    "ScheduleSpec",
    "pruner_names",
]

_SPEC_KEYS = (
    "pruner",
    "config_list",
    "speedup",
    "device",
    "input_shape",
    "input_dtype",
    "export_onnx",
    "verify",
    "seed",
    "latency_runs",
    "latency_batch_sizes",
    "dataset",
    "latency_dtype",
    "latency_budget_s",
    "dataset_id",
    "val_fraction",
    "finetune",
    "schedule",
    "quantize",
)


# Dtypes of the example input: float32 for images and features, int64 for token ids.
INPUT_DTYPES: tuple[str, ...] = ("float32", "int64")

# Dtypes latency may be measured in ("bf16 where asked", design §3); the model itself is not converted.
LatencyDtype = Literal["float32", "bfloat16", "float16"]
LATENCY_DTYPES: tuple[str, ...] = get_args(LatencyDtype)
# The latency budget a job gets by default (``latency_budget_s`` null): a share of the job's own work,
# the wall seconds of its stages before evaluating, measured in the same run, so timing stays near
# 0.2 / 1.2 = 1/6 of the job whatever the model and machine. A fixed 8 s took 36-44% of a ResNet-50
# job on a loaded 2-core CPU (benchmarks/job_overhead.py), 20 fixed runs per figure 45-84% of jobs on
# third-party models (issue 10). The floor keeps small jobs' figures stable (their runs limit ends
# them first) and their batch-8 figure timed unless one batch-1 pass takes over 1/8 s (the seed Net
# took 60 ms at load 9 on 2 cores); the cap keeps a long fine-tuning from buying minutes of timing.
LATENCY_BUDGET_SHARE = 0.2
LATENCY_BUDGET_FLOOR_S = 2.0
LATENCY_BUDGET_CAP_S = 30.0

# Labelled data sets shipped with nncompress that a job may name (no upload needed).
BuiltinDataset = Literal["mnist_subset"]
BUILTIN_DATASETS: tuple[str, ...] = get_args(BuiltinDataset)

# Scheduled (iterative) pruning: NNI's Linear and AGP schedules (nncompress.pruners.scheduled).
ScheduleKind = Literal["linear", "agp"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)

# Pruners that rank channels from data: they need the job's data set (or a built-in one).
DATA_DRIVEN_PRUNERS = frozenset(name for name, cls in PRUNERS.items() if cls.needs_data)


class ScheduleSpec(Spec):
    """Scheduled pruning: reach the config's targets in ``steps`` prune → fine-tune steps.

    Attributes:
        kind: ``"linear"`` or ``"agp"`` (big steps first).
        steps: number of steps, ``>= 1``.
        accuracy_budget: stop at the last step whose validation top-1 stays within this many
            percentage points of the original; None runs every step.
    """

    PREFIX = "schedule"

    kind: ScheduleKind = Field(default="agp", description="linear steps, or AGP (big steps first)")
    steps: Int = Field(default=3, ge=1, description="prune → fine-tune steps")
    accuracy_budget: Number | None = Field(
        default=None,
        ge=0,
        le=100,
        description="stop at the last step whose validation top-1 stays within this many percentage "
        "points of the original; null runs every step",
    )


class JobOptions(Spec):
    """The engine options of a job besides its main fields (the API's ``options``).

    Attributes:
        seed: seeds torch before pruning, so the example inputs and any sampling are reproducible.
        latency_runs: timed forward passes per batch size.
        latency_batch_sizes: batch sizes at which latency is measured.
        dataset: a built-in labelled data set (:data:`BUILTIN_DATASETS`) for the data-driven pruners
            and top-1 accuracy; None for neither.
        latency_dtype: dtype latency is measured in (a converted copy; the artifacts stay float32).
        latency_budget_s: wall seconds latency measurement may take in the evaluating stage (both
            models, every batch size); each figure stops at ``latency_runs``, once its median is
            stable, or when its share is spent, and says which (``stopped``) and how precise it is.
            None (the default): :data:`LATENCY_BUDGET_SHARE` × the seconds of the job's stages
            before evaluating, within [:data:`LATENCY_BUDGET_FLOOR_S`, :data:`LATENCY_BUDGET_CAP_S`];
            then a batch size one pass of which would take longer than a model's whole share is
            not timed (a note says so). The result's ``latency_budget`` gives the seconds used and
            their source.
    """

    PREFIX = "options"

    seed: Int = Field(default=0, ge=0, description="seeds torch before pruning (and the data split)")
    latency_runs: Int = Field(default=20, ge=1, description="timed forward passes per batch size")
    latency_batch_sizes: tuple[Annotated[Int, Field(ge=1)], ...] = Field(
        default=(1, 64), min_length=1, description="batch sizes at which latency is measured"
    )
    dataset: BuiltinDataset | None = Field(
        default=None, description="a built-in labelled data set, instead of an uploaded dataset_id"
    )
    latency_dtype: LatencyDtype = Field(
        default="float32", description="dtype latency is measured in (bf16 as models are served)"
    )
    latency_budget_s: Number | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="wall seconds latency measurement may take (both models, every batch size); "
        "a figure stops early when its median is stable. Null (default): "
        f"{LATENCY_BUDGET_SHARE:g} × the seconds of the job's stages before evaluating, within "
        f"{LATENCY_BUDGET_FLOOR_S:g}-{LATENCY_BUDGET_CAP_S:g} s, and a batch size whose one pass "
        "would take longer than the whole budget is skipped with a note; the result's latency_budget says "
        "which budget was used",
    )


@dataclass(frozen=True)
class JobSpec:
    """A validated compression job.

    Attributes:
        pruner: registry name of the pruner (``"l1norm"``, ``"level"`` …).
        config_list: NNI-style config_list (validated against the model when the job runs).
        speedup: turn masks into a physically smaller model (ignored for unstructured pruners).
        device: where latency is measured: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        input_shape: example input shape including the batch dimension; None takes the
            architecture's.
        input_dtype: dtype of the example input (:data:`INPUT_DTYPES`); None takes the
            architecture's, else float32. ``"int64"`` is for models that take token ids.
        export_onnx: also write ``model.onnx`` and check it in onnxruntime.
        verify: check that the compressed model computes what the masked model computes.
        seed: seeds torch before pruning, so the example inputs and any sampling are reproducible.
        latency_runs: timed forward passes per batch size.
        latency_batch_sizes: batch sizes at which latency is measured.
        dataset: a built-in labelled data set (:data:`BUILTIN_DATASETS`) used as the data of the
            data-driven pruners (with cross-entropy as their loss) and to measure top-1 accuracy
            before and after; None for neither.
        latency_dtype: dtype latency is measured in (a converted copy; the artifacts stay float32).
            On a GPU latency is timed by replaying a CUDA graph, as models are served.
        latency_budget_s: see :class:`JobOptions`.
        dataset_id: an uploaded data set (the service's id); the caller loads it and hands it to
            ``run_job``. It feeds the data-driven pruners, fine-tuning, calibration and accuracy.
        val_fraction: share of the data set held out for validation (seeded split by ``seed``),
            unless the data set came with its own validation part.
        finetune: fine-tune the compressed model (stage ``finetuning``), or None.
        schedule: prune in scheduled steps with fine-tuning between them (replaces one-shot
            pruning + speedup), or None.
        quantize: quantize to int8 after pruning and fine-tuning (stage ``quantizing``), or None.

    ``pruner`` None (with an empty ``config_list``) is a job without pruning, e.g. quantize-only.
    """

    pruner: str | None
    config_list: tuple[dict[str, Any], ...]
    speedup: bool = True
    device: str = "cpu"
    input_shape: tuple[int, ...] | None = None
    input_dtype: str | None = None
    export_onnx: bool = True
    verify: bool = True
    seed: int = 0
    latency_runs: int = 20
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    dataset: str | None = None
    latency_dtype: str = "float32"
    latency_budget_s: float | None = None
    dataset_id: str | None = None
    val_fraction: float = 0.1
    finetune: FinetuneSpec | None = None
    schedule: ScheduleSpec | None = None
    quantize: QuantSpec | None = None

    @property
    def prunes(self) -> bool:
        """Whether the job prunes at all (False for quantize- or fine-tune-only jobs)."""
        return self.pruner is not None

    @property
    def needs_data(self) -> bool:
        """Whether the job needs labelled data: training, calibration or a data-driven pruner."""
        calibrated = self.quantize is not None and self.quantize.mode in ("static", "qat")
        return (
            self.finetune is not None
            or self.schedule is not None
            or calibrated
            or self.pruner in DATA_DRIVEN_PRUNERS
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """Builds a spec from JSON-like data, checking every key.

        Raises:
            ConfigError: an unknown or missing key, or a value of the wrong type or range; the
                message and ``context['key']`` name the key.
        """
        if not isinstance(data, Mapping):
            raise ConfigError("a job spec must be a JSON object", key=None)
        unknown = sorted(set(data) - set(_SPEC_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown job spec key {unknown[0]!r}; allowed keys: {', '.join(_SPEC_KEYS)}", key=unknown[0]
            )
        if "pruner" not in data:
            raise ConfigError(
                "job spec key 'pruner' is required (null for a job without pruning)", key="pruner"
            )
        pruner = data["pruner"]
        names = pruner_names()
        if pruner is not None and (not isinstance(pruner, str) or pruner not in names):
            raise ConfigError(
                f"job spec key 'pruner' must be one of {', '.join(names)} or null, got {pruner!r}",
                key="pruner",
                value=pruner,
            )
        if pruner is not None and "config_list" not in data:
            raise ConfigError("job spec key 'config_list' is required", key="config_list")
        config_list = data.get("config_list", [])
        if not isinstance(config_list, list) or not all(isinstance(e, dict) for e in config_list):
            raise ConfigError("job spec key 'config_list' must be a list of objects", key="config_list")
        if pruner is None and config_list:
            raise ConfigError(
                "job spec key 'config_list' needs a pruner; set 'pruner' or leave config_list out",
                key="config_list",
            )
        device = data.get("device", "cpu")
        if device not in ("cpu", "cuda", "auto"):
            raise ConfigError(
                f"job spec key 'device' must be 'cpu', 'cuda' or 'auto', got {device!r}", key="device"
            )
        input_shape = data.get("input_shape")
        if input_shape is not None:
            input_shape = tuple(_int_list(input_shape, "input_shape", minimum=1))
            if len(input_shape) < 2:
                raise ConfigError(
                    "job spec key 'input_shape' needs the batch dimension and at least one more",
                    key="input_shape",
                )
        options = JobOptions.from_dict({k: data[k] for k in JobOptions.model_fields if k in data}, prefix="")
        extras = _training_keys(data, pruner)
        return cls(
            pruner=pruner,
            config_list=tuple(dict(e) for e in config_list),
            speedup=_bool(data, "speedup", True),
            device=device,
            input_shape=input_shape,
            input_dtype=_input_dtype(data.get("input_dtype")),
            export_onnx=_bool(data, "export_onnx", True),
            verify=_bool(data, "verify", True),
            seed=options.seed,
            latency_runs=options.latency_runs,
            latency_batch_sizes=options.latency_batch_sizes,
            dataset=options.dataset,
            latency_dtype=options.latency_dtype,
            latency_budget_s=None if options.latency_budget_s is None else float(options.latency_budget_s),
            **extras,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``JobSpec.from_dict(spec.to_dict()) == spec``."""
        # The fields one level deep: the nested ones are replaced below, the rest are scalars
        # (asdict's deep copy was a tenth of a submit's validation).
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["config_list"] = [dict(e) for e in self.config_list]
        data["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        data["latency_batch_sizes"] = list(self.latency_batch_sizes)
        data["finetune"] = self.finetune.to_dict() if self.finetune is not None else None
        data["schedule"] = self.schedule.to_dict() if self.schedule is not None else None
        data["quantize"] = self.quantize.to_dict() if self.quantize is not None else None
        return data


def _training_keys(data: Mapping[str, Any], pruner: str | None) -> dict[str, Any]:
    """Validates dataset_id, val_fraction, finetune, schedule and quantize, and how they combine."""
    dataset_id = data.get("dataset_id")
    if dataset_id is not None and (not isinstance(dataset_id, str) or not dataset_id):
        raise ConfigError(
            f"job spec key 'dataset_id' must be a string id, got {dataset_id!r}", key="dataset_id"
        )
    if dataset_id is not None and data.get("dataset") is not None:
        raise ConfigError("give 'dataset' (built-in) or 'dataset_id' (uploaded), not both", key="dataset_id")
    fraction = data.get("val_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ConfigError(
            f"job spec key 'val_fraction' must be a number between 0 and 1 (exclusive), got {fraction!r}",
            key="val_fraction",
        )
    raw_ft = data.get("finetune")
    finetune = FinetuneSpec.from_dict(raw_ft, prefix="finetune") if raw_ft is not None else None
    raw_schedule = data.get("schedule")
    schedule = ScheduleSpec.from_dict(raw_schedule) if raw_schedule is not None else None
    raw_quantize = data.get("quantize")
    quantize = QuantSpec.from_dict(raw_quantize) if raw_quantize is not None else None
    if schedule is not None and pruner is None:
        raise ConfigError("schedule needs a pruner and a config_list to reach in steps", key="schedule")
    if schedule is not None and finetune is None:
        raise ConfigError(
            "schedule needs 'finetune': the fine-tuning that runs after every step", key="finetune"
        )
    if quantize is not None and quantize.mode == "qat" and finetune is None:
        raise ConfigError(
            "quantize.mode 'qat' trains through the fine-tuning loop: add 'finetune' (epochs, lr, ...)",
            key="quantize.mode",
        )
    if pruner is None and finetune is None and quantize is None:
        raise ConfigError(
            "a job without a pruner must ask for 'quantize' or 'finetune'; it would do nothing", key="pruner"
        )
    return {
        "dataset_id": dataset_id,
        "val_fraction": float(fraction),
        "finetune": finetune,
        "schedule": schedule,
        "quantize": quantize,
    }


def pruner_names() -> tuple[str, ...]:
    """Registry names of the pruners a job may ask for."""
    return tuple(PRUNERS)


def _input_dtype(value: object) -> str | None:
    if value is None or value in INPUT_DTYPES:
        return value  # type: ignore[return-value]
    raise ConfigError(
        f"job spec key 'input_dtype' must be one of {', '.join(INPUT_DTYPES)} or null, got {value!r}",
        key="input_dtype",
    )


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"job spec key {key!r} must be true or false, got {value!r}", key=key)
    return value


def _int_list(value: object, key: str, *, minimum: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise ConfigError(
            f"job spec key {key!r} must be a list of integers ≥ {minimum}, got {value!r}", key=key
        )
    return [int(v) for v in value]
