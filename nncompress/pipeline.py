"""The compression pipeline: the one function a worker (or the CLI) calls to run a job.

``run_job`` takes a loaded model and a validated :class:`JobSpec`, runs the stages
loading → pruning → speedup → verifying → evaluating → exporting, reports progress as a percentage
of the whole job, stops between stages when asked, and writes the artifacts (safetensors weights +
manifest, ONNX, JSON report) into ``out_dir``. The service stays thin: it only loads the job row,
calls this, and writes the result back.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nncompress.errors import ArtifactError, ConfigError, NncompressError, VerificationError
from nncompress.io.artifacts import MANIFEST_FILE, WEIGHTS_FILE, load_compressed, save_compressed
from nncompress.io.onnx_export import check_onnx, export_onnx_with_info
from nncompress.io.tensors import safetensors_state_dict, sha256_file
from nncompress.metrics import ModelMetrics, file_bytes, measure_model, resolve_device
from nncompress.progress import ProgressFn, noop_progress

__all__ = [
    "STAGES",
    "Artifact",
    "JobCancelled",
    "JobResult",
    "JobSpec",
    "LayerChange",
    "run_job",
]

STAGES: tuple[str, ...] = ("loading", "pruning", "speedup", "verifying", "evaluating", "exporting")

# Share of the whole job each stage covers, in percent. Measured on the seed Net on 1 CPU thread:
# evaluating (latency at two batch sizes, twice) and exporting (ONNX capture) dominate.
_SPANS: dict[str, tuple[float, float]] = {
    "loading": (0.0, 5.0),
    "pruning": (5.0, 25.0),
    "speedup": (25.0, 40.0),
    "verifying": (40.0, 50.0),
    "evaluating": (50.0, 80.0),
    "exporting": (80.0, 100.0),
}

# Pruners whose masks are element-wise: they become sparsity, never a smaller shape.
_UNSTRUCTURED = frozenset({"level"})

_REPORT_FILE = "report.json"
_ONNX_FILE = "model.onnx"
_RESUME_DIR = "_resume"

EvalData = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]

_SPEC_KEYS = (
    "pruner",
    "config_list",
    "speedup",
    "device",
    "input_shape",
    "export_onnx",
    "verify",
    "seed",
    "latency_runs",
    "latency_batch_sizes",
    "dataset",
    "latency_dtype",
)

# Dtypes latency may be measured in ("bf16 where asked", design §3); the model itself is not converted.
LATENCY_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")

# Labelled data sets shipped with nncompress that a job may name (no upload needed).
BUILTIN_DATASETS: tuple[str, ...] = ("mnist_subset",)


class JobCancelled(NncompressError):
    """The job was asked to stop; raised between stages (``context['stage']`` is the next one)."""

    code = "cancelled"


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
    """

    pruner: str
    config_list: tuple[dict[str, Any], ...]
    speedup: bool = True
    device: str = "cpu"
    input_shape: tuple[int, ...] | None = None
    export_onnx: bool = True
    verify: bool = True
    seed: int = 0
    latency_runs: int = 20
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    dataset: str | None = None
    latency_dtype: str = "float32"

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
        for key in ("pruner", "config_list"):
            if key not in data:
                raise ConfigError(f"job spec key {key!r} is required", key=key)
        pruner = data["pruner"]
        names = pruner_names()
        if not isinstance(pruner, str) or pruner not in names:
            raise ConfigError(
                f"job spec key 'pruner' must be one of {', '.join(names)}, got {pruner!r}",
                key="pruner",
                value=pruner,
            )
        config_list = data["config_list"]
        if not isinstance(config_list, list) or not all(isinstance(e, dict) for e in config_list):
            raise ConfigError("job spec key 'config_list' must be a list of objects", key="config_list")
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
        batch_sizes = tuple(
            _int_list(data.get("latency_batch_sizes", [1, 64]), "latency_batch_sizes", minimum=1)
        )
        if not batch_sizes:
            raise ConfigError(
                "job spec key 'latency_batch_sizes' must not be empty", key="latency_batch_sizes"
            )
        return cls(
            pruner=pruner,
            config_list=tuple(dict(e) for e in config_list),
            speedup=_bool(data, "speedup", True),
            device=device,
            input_shape=input_shape,
            export_onnx=_bool(data, "export_onnx", True),
            verify=_bool(data, "verify", True),
            seed=_int(data, "seed", 0, minimum=0),
            latency_runs=_int(data, "latency_runs", 20, minimum=1),
            latency_batch_sizes=batch_sizes,
            dataset=_dataset_name(data.get("dataset")),
            latency_dtype=_latency_dtype(data.get("latency_dtype", "float32")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``JobSpec.from_dict(spec.to_dict()) == spec``."""
        data = asdict(self)
        data["config_list"] = [dict(e) for e in self.config_list]
        data["input_shape"] = list(self.input_shape) if self.input_shape is not None else None
        data["latency_batch_sizes"] = list(self.latency_batch_sizes)
        return data


@dataclass(frozen=True)
class Artifact:
    """One file the job wrote, content-addressed.

    Attributes:
        name: file name inside the job folder (``model.safetensors`` …).
        path: absolute path on disk.
        sha256: hex digest of the file's bytes.
        size_bytes: file size.
        media_type: HTTP content type to serve it with.
    """

    name: str
    path: str
    sha256: str
    size_bytes: int
    media_type: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerChange:
    """Channels of one weighted layer before and after compression (None where a side has no channels)."""

    name: str
    type: str
    in_before: int | None
    in_after: int | None
    out_before: int | None
    out_after: int | None
    params_before: int
    params_after: int
    sparsity_after: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobResult:
    """Everything a finished job produced.

    Attributes:
        spec: the spec that ran.
        architecture: registry name of the model's architecture, if any.
        metrics_before: measured on the model as given.
        metrics_after: measured on the compressed model.
        layers: per weighted layer, channels before/after.
        artifacts: files written, with sha256 and size (report.json last).
        speedup_applied: True when the model was physically shrunk.
        kept: kept channel indices per pruned layer (empty without speedup).
        checks: verification, reload and ONNX checks that ran, with their measured differences.
        notes: plain-language remarks for the user (skipped stages, why).
        timings: wall seconds per stage.
        accuracy: top-1 accuracy ``{"before": …, "after": …}`` on ``eval_data``, when it was given.
    """

    spec: JobSpec
    architecture: str | None
    metrics_before: ModelMetrics
    metrics_after: ModelMetrics
    layers: tuple[LayerChange, ...]
    artifacts: tuple[Artifact, ...]
    speedup_applied: bool
    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] | None = None

    def artifact(self, name: str) -> Artifact:
        """Returns the artifact called ``name``; KeyError lists the names there are."""
        for item in self.artifacts:
            if item.name == name:
                return item
        raise KeyError(f"no artifact {name!r}; there are {', '.join(a.name for a in self.artifacts)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``json.dumps`` works on it as is)."""
        return {
            "spec": self.spec.to_dict(),
            "architecture": self.architecture,
            "metrics": {
                "before": {**self.metrics_before.to_dict(), **self._accuracy("before")},
                "after": {**self.metrics_after.to_dict(), **self._accuracy("after")},
            },
            "layers": [layer.to_dict() for layer in self.layers],
            "artifacts": [a.to_dict() for a in self.artifacts],
            "speedup_applied": self.speedup_applied,
            "kept": self.kept,
            "checks": self.checks,
            "notes": list(self.notes),
            "timings": self.timings,
        }

    def _accuracy(self, which: str) -> dict[str, float]:
        return {"accuracy": self.accuracy[which]} if self.accuracy is not None else {}


def pruner_names() -> tuple[str, ...]:
    """Registry names of the pruners a job may ask for."""
    from nncompress.pruners import PRUNERS

    return tuple(PRUNERS)


def run_job(
    spec: JobSpec,
    *,
    model: nn.Module,
    architecture: str | None,
    out_dir: str | Path,
    progress: ProgressFn = noop_progress,
    should_stop: Callable[[], bool] = lambda: False,
    resume_from: str | None = None,
    data: Iterable[Any] | Callable[[nn.Module], None] | None = None,
    criterion: Callable[[Any, Any], torch.Tensor] | None = None,
    eval_data: EvalData | None = None,
) -> JobResult:
    """Runs one compression job from a loaded model to artifacts on disk.

    The model passed in is never modified. Pruning and the speedup run on the CPU (deterministic,
    and the verification compares like with like); latency is measured on ``spec.device``.

    Args:
        spec: the validated job.
        model: the model to compress (e.g. from :func:`nncompress.io.load_model`).
        architecture: its registry name, which makes the artifact reloadable without pickle; None
            for models that came from ONNX or a pickle (the weights are still saved, with a note).
        out_dir: the job's folder; created when missing.
        progress: called as ``progress(stage, percent_of_job, message)``; percent never decreases
            and the last call reports 100.
        should_stop: polled before each stage; when it returns True, :class:`JobCancelled` is raised.
        resume_from: a stage name from a previous, interrupted attempt in the same ``out_dir``; the
            masks that attempt saved are reused when they belong to the same spec and model, so
            pruning (the expensive, data-driven step) is not repeated. Otherwise the job starts over.
        data: batches or a training callable for the data-driven pruners (slim, taylorfo, apoz,
            mean_activation).
        criterion: loss function ``(outputs, targets) -> loss`` for pruners that need gradients.
        eval_data: labelled data, ``(inputs, labels)`` or an iterable of such batches; when given,
            top-1 accuracy is measured before and after compression.

    Returns:
        A :class:`JobResult`; ``result.to_dict()`` is also written to ``report.json``.

    Raises:
        JobCancelled: ``should_stop()`` returned True between stages.
        ConfigError: the config, pruner options or input shape do not fit the model.
        SpeedupError / VerificationError: the compressed model is not equivalent.
        ArtifactError: an artifact failed its reload or ONNX check.
    """
    if resume_from is not None and resume_from not in STAGES:
        raise ConfigError(
            f"resume_from must be one of {', '.join(STAGES)}, got {resume_from!r}", key="resume_from"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = _StageRunner(progress, should_stop)
    notes: list[str] = []
    checks: dict[str, Any] = {}

    with run.stage("loading"):
        torch.manual_seed(spec.seed)
        device = _device(spec.device)
        original = copy.deepcopy(model).cpu().eval()
        example, input_dtype = _example_input(spec, architecture)
        _check_runs(original, example)
        if spec.dataset is not None and (data is None or eval_data is None):
            batches, labelled = _builtin_dataset(spec.dataset, example)
            data = batches if data is None else data
            eval_data = labelled if eval_data is None else eval_data
            if criterion is None:
                criterion = torch.nn.functional.cross_entropy
        model_digest = _state_digest(original)

    masks: dict[str, dict[str, torch.Tensor]] | None = None
    resume = out / _RESUME_DIR
    if resume_from is not None and STAGES.index(resume_from) >= STAGES.index("speedup"):
        masks = _load_checkpoint(resume, spec, model_digest)
        notes.append(
            "resumed: reused the masks the interrupted attempt saved"
            if masks is not None
            else f"resume from {resume_from!r} was asked, but no matching checkpoint was found; started over"
        )

    with run.stage("pruning", "reused saved masks" if masks is not None else spec.pruner):
        if masks is None:
            from nncompress.pruners import prune

            result = prune(
                copy.deepcopy(original),
                list(spec.config_list),
                pruner=spec.pruner,
                example_inputs=example,
                data=data,
                criterion=criterion,
            )
            masks = {
                m: {p: t.detach().cpu() for p, t in params.items()} for m, params in result.masks.items()
            }
            _save_checkpoint(resume, spec, model_digest, masks)
        masked = _apply_masks(copy.deepcopy(original), masks)

    kept: dict[str, dict[str, list[int]]] = {}
    structured = spec.pruner not in _UNSTRUCTURED
    with run.stage("speedup"):
        if spec.speedup and structured:
            from nncompress.speedup import speedup

            sped = speedup(original, masks, example, verify=spec.verify)
            compressed = sped.model.eval()
            kept = {m: {d: list(i) for d, i in dims.items()} for m, dims in sped.kept.items()}
            checks["speedup"] = _jsonable(sped.to_dict())
            if not kept:
                notes.append(
                    "the masks emptied no whole channel, so no layer changed shape; "
                    "the zeros are kept as sparsity"
                )
        else:
            compressed = masked
            reason = (
                f"{spec.pruner} prunes single weights, which cannot shrink a layer"
                if not structured
                else "speedup was turned off for this job"
            )
            notes.append(
                f"no speedup: {reason}; the saved weights are the masked model's "
                "(same shapes, pruned weights are zero) and the manifest has no kept indices"
            )
    speedup_applied = bool(kept)

    with run.stage("verifying"):
        if spec.verify:
            checks["equivalence"] = _verify(masked, compressed, example, seed=spec.seed)
        else:
            notes.append("verification was turned off for this job")

    with run.stage("evaluating") as stage:
        measure = {
            "example_inputs": example,
            "device": str(device),
            "batch_sizes": spec.latency_batch_sizes,
            "runs": spec.latency_runs,
            "warmup": max(1, spec.latency_runs // 10),
            "dtype": getattr(torch, spec.latency_dtype),
        }
        before = measure_model(original, **measure)
        stage.update(0.5, "measured the original model")
        after = measure_model(compressed, **measure)
        accuracy = None
        if eval_data is not None:
            stage.update(0.8, "measuring accuracy")
            accuracy = {"before": _accuracy(original, eval_data), "after": _accuracy(compressed, eval_data)}
        layers = _layer_changes(original, compressed)

    with run.stage("exporting") as stage:
        artifacts = _export(
            spec,
            out,
            compressed,
            architecture,
            kept,
            example,
            input_dtype,
            before,
            after,
            notes,
            checks,
            stage,
        )
        result = JobResult(
            spec=spec,
            architecture=architecture,
            metrics_before=before,
            metrics_after=after,
            layers=layers,
            artifacts=tuple(artifacts),
            speedup_applied=speedup_applied,
            kept=kept,
            checks=checks,
            notes=tuple(notes),
            timings=dict(run.timings),
            accuracy=accuracy,
        )
        report_path = out / _REPORT_FILE
        report_path.write_text(
            json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
        report = _artifact(report_path, "application/json")
        _remove_checkpoint(resume)
    return JobResult(**{**result.__dict__, "artifacts": (*artifacts, report), "timings": dict(run.timings)})


# --- stages -------------------------------------------------------------------------------------


class _Stage:
    """Handle a stage body uses to report progress inside its span."""

    def __init__(self, runner: _StageRunner, name: str) -> None:
        self._runner = runner
        self._name = name

    def update(self, fraction: float, message: str | None = None) -> None:
        low, high = _SPANS[self._name]
        self._runner.report(self._name, low + (high - low) * min(1.0, max(0.0, fraction)), message)


class _StageRunner:
    """Runs stages in order: checks for cancellation first, then reports start and end percentages."""

    def __init__(self, progress: ProgressFn, should_stop: Callable[[], bool]) -> None:
        self._progress = progress
        self._should_stop = should_stop
        self._percent = 0.0
        self.timings: dict[str, float] = {}

    def report(self, stage: str, percent: float, message: str | None) -> None:
        # Never step backwards, whatever a stage reports.
        self._percent = max(self._percent, percent)
        self._progress(stage, self._percent, message)

    @contextmanager
    def stage(self, name: str, message: str | None = None) -> Iterator[_Stage]:
        if self._should_stop():
            raise JobCancelled(f"the job was cancelled before the {name} stage", stage=name)
        low, high = _SPANS[name]
        self.report(name, low, message)
        start = time.perf_counter()
        yield _Stage(self, name)
        self.timings[name] = time.perf_counter() - start
        self.report(name, high, "done")


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise ConfigError(str(exc), key="device", value=name) from exc


def _example_input(spec: JobSpec, architecture: str | None) -> tuple[torch.Tensor, torch.dtype]:
    generator = torch.Generator().manual_seed(spec.seed)
    arch = None
    if architecture is not None:
        from nncompress.models import get

        try:
            arch = get(architecture)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0]), key="architecture") from exc
    shape = spec.input_shape or (arch.input_shape if arch is not None else None)
    if shape is None:
        raise ConfigError(
            "input_shape is required when the model has no registry architecture", key="input_shape"
        )
    if arch is not None and arch.input_dtype == torch.long:
        vocab = int(arch.kwargs.get("vocab_size", 100))  # type: ignore[call-overload]
        return torch.randint(0, vocab, tuple(shape), generator=generator), torch.long
    return torch.randn(tuple(shape), generator=generator), torch.float32


def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.inference_mode():
            model(example)
    except Exception as exc:  # any failure here means the input does not fit the model
        raise ConfigError(
            f"the model does not accept an input of shape {list(example.shape)}: {exc}",
            key="input_shape",
            shape=list(example.shape),
        ) from exc


def _apply_masks(model: nn.Module, masks: Mapping[str, Mapping[str, torch.Tensor]]) -> nn.Module:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, params in masks.items():
            module = modules.get(name)
            if module is None:
                raise ConfigError(
                    f"the pruner returned a mask for {name!r}, which the model does not have", layer=name
                )
            for param_name, mask in params.items():
                tensor = getattr(module, param_name)
                tensor.mul_(mask.to(dtype=tensor.dtype, device=tensor.device))
    return model.eval()


def _verify(masked: nn.Module, compressed: nn.Module, example: torch.Tensor, *, seed: int) -> dict[str, Any]:
    # The example plus random batches of 4: a speedup that only works at batch 1, or only on the
    # example's values, is caught here.
    generator = torch.Generator().manual_seed(seed + 1)
    batches = [example]
    for _ in range(2):
        if example.dtype.is_floating_point:
            batches.append(torch.randn((4, *example.shape[1:]), generator=generator, dtype=example.dtype))
        else:
            high = int(example.max()) + 1
            batches.append(torch.randint(0, max(high, 2), (4, *example.shape[1:]), generator=generator))
    worst, scale = 0.0, 0.0
    with torch.inference_mode():
        for batch in batches:
            refs, gots = _tensors(masked(batch)), _tensors(compressed(batch))
            if len(refs) != len(gots):
                raise VerificationError(
                    f"the compressed model returns {len(gots)} tensors, the masked model {len(refs)}"
                )
            for index, (ref, got) in enumerate(zip(refs, gots, strict=True)):
                if ref.shape != got.shape:
                    raise VerificationError(
                        f"output {index} of the compressed model has shape {list(got.shape)}, "
                        f"the masked model's {list(ref.shape)}",
                        output=index,
                        batch_shape=list(batch.shape),
                    )
                if ref.numel():
                    worst = max(worst, float((ref.double() - got.double()).abs().max()))
                    scale = max(scale, float(ref.double().abs().max()))
    rtol, atol = 1e-4, 1e-5
    if worst > rtol * scale + atol:
        raise VerificationError(
            f"the compressed model differs from the masked model by {worst:.3g} on outputs of magnitude "
            f"{scale:.3g} (allowed {rtol * scale + atol:.3g})",
            max_abs_diff=worst,
        )
    return {"max_abs_diff": worst, "output_scale": scale, "inputs": len(batches), "rtol": rtol, "atol": atol}


def _tensors(out: object) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor, or tuples/lists/dicts of them), in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    if isinstance(out, Mapping):
        return [t for key in sorted(out, key=str) for t in _tensors(out[key])]
    raise VerificationError(f"cannot compare a model output of type {type(out).__name__}")


def _latency_dtype(value: object) -> str:
    if value in LATENCY_DTYPES:
        return value  # type: ignore[return-value]
    raise ConfigError(
        f"job spec key 'latency_dtype' must be one of {', '.join(LATENCY_DTYPES)}, got {value!r}",
        key="latency_dtype",
    )


def _dataset_name(value: object) -> str | None:
    if value is None or value in BUILTIN_DATASETS:
        return value  # type: ignore[return-value]
    raise ConfigError(
        f"job spec key 'dataset' must be one of {', '.join(BUILTIN_DATASETS)} or null, got {value!r}",
        key="dataset",
    )


def _builtin_dataset(
    name: str, example: torch.Tensor
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]:
    from nncompress.data import load_mnist_subset

    images, labels = load_mnist_subset()
    if tuple(example.shape[1:]) != tuple(images.shape[1:]):
        raise ConfigError(
            f"data set {name} holds inputs of shape {list(images.shape[1:])}, "
            f"but the model takes {list(example.shape[1:])}",
            key="dataset",
        )
    # Batches of 64: small enough for activation statistics on a laptop, 16 of them over 1,000 images.
    batches = [(images[i : i + 64], labels[i : i + 64]) for i in range(0, len(images), 64)]
    return batches, (images, labels)


def _accuracy(model: nn.Module, eval_data: EvalData) -> float:
    batches = (
        [eval_data] if isinstance(eval_data, tuple) and isinstance(eval_data[0], torch.Tensor) else eval_data
    )
    correct = total = 0
    with torch.inference_mode():
        for inputs, labels in batches:
            predicted = model(inputs).argmax(dim=-1)
            correct += int((predicted == labels).sum())
            total += int(labels.numel())
    if total == 0:
        raise ConfigError("eval_data holds no examples", key="eval_data")
    return correct / total


def _layer_changes(before: nn.Module, after: nn.Module) -> tuple[LayerChange, ...]:
    after_modules = dict(after.named_modules())
    changes = []
    for name, module in before.named_modules():
        own = list(module.parameters(recurse=False))
        twin = after_modules.get(name)
        if not name or not own or twin is None:
            continue
        in_before, out_before = _channels(module)
        in_after, out_after = _channels(twin)
        # Sparsity of the weight, as in ModelMetrics (biases and norm shifts start at zero anyway).
        weight = getattr(twin, "weight", None)
        counted = [weight] if isinstance(weight, torch.Tensor) else list(twin.parameters(recurse=False))
        numel = sum(p.numel() for p in counted)
        zeros = numel - sum(int(torch.count_nonzero(p.detach())) for p in counted)
        changes.append(
            LayerChange(
                name=name,
                type=type(module).__name__,
                in_before=in_before,
                in_after=in_after,
                out_before=out_before,
                out_after=out_after,
                params_before=sum(p.numel() for p in own),
                params_after=sum(p.numel() for p in twin.parameters(recurse=False)),
                sparsity_after=zeros / numel if numel else 0.0,
            )
        )
    return tuple(changes)


# Attribute pairs (input side, output side) that name a layer's channels, by layer family.
_CHANNEL_ATTRS: tuple[tuple[str | None, str], ...] = (
    ("in_channels", "out_channels"),  # convolutions
    ("in_features", "out_features"),  # Linear
    ("input_size", "hidden_size"),  # LSTM, GRU, RNN
    (None, "embedding_dim"),  # Embedding: the vocabulary is not a channel dimension
    ("num_features", "num_features"),  # BatchNorm, InstanceNorm
    ("num_channels", "num_channels"),  # GroupNorm
    ("embed_dim", "embed_dim"),  # MultiheadAttention
)


def _channels(module: nn.Module) -> tuple[int | None, int | None]:
    for in_attr, out_attr in _CHANNEL_ATTRS:
        out = getattr(module, out_attr, None)
        if isinstance(out, int):
            inp = getattr(module, in_attr, None) if in_attr else None
            return (inp if isinstance(inp, int) else None), out
    shape = getattr(module, "normalized_shape", None)  # LayerNorm
    if isinstance(shape, tuple) and shape:
        return int(shape[-1]), int(shape[-1])
    # Anything else: read the channels off the weight, output dimension first as in torch layers.
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() >= 1:
        return (int(weight.shape[1]) if weight.dim() > 1 else None), int(weight.shape[0])
    return None, None


def _export(
    spec: JobSpec,
    out: Path,
    compressed: nn.Module,
    architecture: str | None,
    kept: dict[str, dict[str, list[int]]],
    example: torch.Tensor,
    input_dtype: torch.dtype,
    before: ModelMetrics,
    after: ModelMetrics,
    notes: list[str],
    checks: dict[str, Any],
    stage: _Stage,
) -> list[Artifact]:
    save_compressed(
        compressed,
        out,
        architecture=architecture,
        kept=kept,
        config_list=spec.config_list,
        pruner=spec.pruner,
        input_shape=list(example.shape),
        input_dtype=input_dtype,
        metrics={"before": before.to_dict(), "after": after.to_dict()},
        extra={"speedup_applied": bool(kept), "notes": list(notes)},
    )
    artifacts = [
        _artifact(out / WEIGHTS_FILE, "application/octet-stream"),
        _artifact(out / MANIFEST_FILE, "application/json"),
    ]
    stage.update(0.3, "saved weights and manifest")
    if architecture is not None:
        # Prove the artifact is what we claim: rebuilt from the registry without pickle, it computes
        # exactly what the compressed model computes.
        reloaded = load_compressed(out)
        with torch.inference_mode():
            pairs = zip(_tensors(reloaded(example)), _tensors(compressed(example)), strict=True)
            diff = max((float((a - b).abs().max()) for a, b in pairs if a.numel()), default=0.0)
        if diff != 0.0:
            raise ArtifactError(
                f"the reloaded artifact differs from the compressed model by {diff:.3g}", max_abs_diff=diff
            )
        checks["reload"] = {"max_abs_diff": diff, "architecture": architecture}
    else:
        notes.append(
            "the model has no registry architecture, so model.safetensors cannot be rebuilt "
            "without the original code; use model.onnx to run it"
        )
    stage.update(0.5, "reloaded the artifact")
    if spec.export_onnx:
        path, exporter = export_onnx_with_info(compressed, example, out / _ONNX_FILE)
        onnx_check = check_onnx(path, compressed, example, rtol=1e-4, atol=1e-4)
        checks["onnx"] = {"exporter": exporter, **asdict(onnx_check)}
        artifacts.append(_artifact(path, "application/onnx"))
    else:
        notes.append("ONNX export was turned off for this job")
    return artifacts


def _artifact(path: Path, media_type: str) -> Artifact:
    return Artifact(
        name=path.name,
        path=str(path.resolve()),
        sha256=sha256_file(path),
        size_bytes=file_bytes(path),
        media_type=media_type,
    )


# --- resume checkpoint ----------------------------------------------------------------------------


def _state_digest(model: nn.Module) -> str:
    import hashlib

    from safetensors.torch import save

    return hashlib.sha256(save(safetensors_state_dict(model))).hexdigest()


def _save_checkpoint(
    folder: Path, spec: JobSpec, digest: str, masks: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # "/" cannot appear in a module or parameter name, so it separates them unambiguously.
    flat = {f"{m}/{p}": t.contiguous() for m, params in masks.items() for p, t in params.items()}
    save_file(flat, str(folder / "masks.safetensors"))
    key = {"spec": spec.to_dict(), "model_sha256": digest}
    (folder / "key.json").write_text(json.dumps(key, sort_keys=True), encoding="utf-8")


def _load_checkpoint(folder: Path, spec: JobSpec, digest: str) -> dict[str, dict[str, torch.Tensor]] | None:
    try:
        key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
        flat = load_file(str(folder / "masks.safetensors"))
    except (OSError, ValueError):
        return None
    if key != json.loads(json.dumps({"spec": spec.to_dict(), "model_sha256": digest}, sort_keys=True)):
        return None
    masks: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in flat.items():
        module, _, param = name.rpartition("/")
        masks.setdefault(module, {})[param] = tensor
    return masks


def _remove_checkpoint(folder: Path) -> None:
    for name in ("masks.safetensors", "key.json"):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


# --- small validators ------------------------------------------------------------------------------


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"job spec key {key!r} must be true or false, got {value!r}", key=key)
    return value


def _int(data: Mapping[str, Any], key: str, default: int, *, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"job spec key {key!r} must be an integer ≥ {minimum}, got {value!r}", key=key)
    return value


def _int_list(value: object, key: str, *, minimum: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise ConfigError(
            f"job spec key {key!r} must be a list of integers ≥ {minimum}, got {value!r}", key=key
        )
    return [int(v) for v in value]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
