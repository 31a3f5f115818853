"""The job spec: what a compression job asks for, validated key by key.

The service stores ``JobSpec.to_dict()`` on the job row and the worker rebuilds it with
``JobSpec.from_dict``; every invalid value is a :class:`~nncompress.errors.ConfigError` whose
``context['key']`` names the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from nncompress.errors import ConfigError

__all__ = ["BUILTIN_DATASETS", "LATENCY_DTYPES", "JobSpec", "pruner_names"]

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


def pruner_names() -> tuple[str, ...]:
    """Registry names of the pruners a job may ask for."""
    from nncompress.pruners import PRUNERS

    return tuple(PRUNERS)


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
