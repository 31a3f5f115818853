"""Architectures from installed model libraries, named ``torchvision/<model>`` and ``timm/<model>``.

They resolve lazily, on first use: the libraries are optional extras, importing timm costs seconds,
and timm alone knows some 1,300 models, so none of them are copied into the registry (whose
``names()`` keeps listing only the built-ins that other code iterates). Every model is built with
random weights (torchvision ``weights=None``, timm ``pretrained=False``): nothing is downloaded, and
the uploaded weights are loaded strictly afterwards.

A user's fine-tuned backbone usually has its own head (a ResNet-50 with 10 classes instead of
1,000). :func:`state_overrides` reads that from the weights' shapes, so :func:`build_for_state`
builds a model the weights fit exactly.

Hugging Face transformers models are not buildable by name (they need their ``config.json``); see
:mod:`nncompress.io.hf_dir`. The ``hf/`` prefix is listed by :func:`library_families` for that reason.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nncompress.models.registry import Architecture

__all__ = [
    "LIBRARY_PREFIXES",
    "LibraryFamily",
    "LibraryUnavailableError",
    "build_for_state",
    "is_library_name",
    "library_families",
    "library_model_names",
    "resolve",
    "state_overrides",
]

LIBRARY_PREFIXES = ("torchvision", "timm", "hf")

_DEFAULT_IMAGE = (1, 3, 224, 224)
# torchvision's own defaults where a model does not take 224×224 (inception_v3 refuses less than 75).
_TORCHVISION_SIZES = {"inception_v3": 299}
_EXAMPLES = 5


class LibraryUnavailableError(KeyError):
    """The library an architecture name refers to is not installed on this deployment.

    A ``KeyError`` so that callers handling unknown architectures handle this one too.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LibraryFamily:
    """What ``GET /v1/architectures`` says about one model library.

    Args:
        library: ``"torchvision"``, ``"timm"`` or ``"transformers"``.
        prefix: how names from it are spelled, e.g. ``"timm/"``.
        installed: whether the library can be imported here.
        version: its installed version, or None.
        count: how many models it offers by name (None when not installed or not nameable).
        examples: a few names, with the prefix.
        note: how to use it.
    """

    library: str
    prefix: str
    installed: bool
    version: str | None
    count: int | None
    examples: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "library": self.library,
            "prefix": self.prefix,
            "installed": self.installed,
            "version": self.version,
            "count": self.count,
            "examples": list(self.examples),
            "note": self.note,
        }


def is_library_name(name: str) -> bool:
    """Whether ``name`` is spelled ``<library>/<model>`` for a library this module knows."""
    prefix, sep, rest = name.partition("/")
    return bool(sep) and prefix in LIBRARY_PREFIXES and bool(rest)


def resolve(name: str) -> Architecture:
    """Returns the architecture for ``torchvision/<model>`` or ``timm/<model>``.

    Raises:
        LibraryUnavailableError: the library is not installed on this deployment.
        KeyError: the library does not know the model; the message lists close matches.
    """
    prefix, _, model = name.partition("/")
    if prefix == "hf":
        raise KeyError(
            f"{name!r} is a Hugging Face transformers class: it is built from its config.json, so upload "
            "the model directory (config.json + model.safetensors, zipped) instead of naming it"
        )
    if prefix not in ("torchvision", "timm") or not model:
        raise KeyError(
            f"unknown architecture {name!r}; library names look like torchvision/resnet50, timm/resnet18"
        )
    return _resolve_cached(prefix, model)


@functools.lru_cache(maxsize=256)
def _resolve_cached(library: str, model: str) -> Architecture:
    _import(library)
    if library == "torchvision":
        return _torchvision_arch(model)
    return _timm_arch(model)


def library_model_names(library: str) -> list[str]:
    """Every model name ``library`` offers, with its prefix (``timm`` has ~1,300).

    Raises:
        LibraryUnavailableError: the library is not installed.
        ValueError: not a library that offers models by name.
    """
    if library not in ("torchvision", "timm"):
        raise ValueError(f"library must be 'torchvision' or 'timm', got {library!r}")
    return [f"{library}/{n}" for n in _plain_names(library)]


def library_families() -> dict[str, LibraryFamily]:
    """Which model libraries this deployment has, their versions, and how many models each offers."""
    out: dict[str, LibraryFamily] = {}
    for library in ("torchvision", "timm"):
        version = _version(library)
        names: list[str] = []
        if version is not None:
            try:
                names = library_model_names(library)
            except LibraryUnavailableError:
                version = None  # installed as a distribution but not importable
        out[library] = LibraryFamily(
            library=library,
            prefix=f"{library}/",
            installed=version is not None,
            version=version,
            count=len(names) if version is not None else None,
            examples=_examples(names),
            note="built by name with random weights; the uploaded safetensors or state_dict loads strictly",
        )
    version = _version("transformers")
    out["transformers"] = LibraryFamily(
        library="transformers",
        prefix="hf/",
        installed=version is not None,
        version=version,
        count=None,
        examples=["hf/BertForSequenceClassification", "hf/GPT2LMHeadModel", "hf/ViTForImageClassification"],
        note="upload the save_pretrained folder (config.json + *.safetensors) zipped; no remote code",
    )
    return out


def state_overrides(name: str, shapes: Mapping[str, Sequence[int]]) -> dict[str, object]:
    """Keyword arguments that make architecture ``name`` fit weights of the given shapes.

    Today that is the classifier: when the only keys whose shapes differ are the weight and bias of
    the head (a ``Linear`` or 1×1 ``Conv2d``), and only in their output dimension, the number of
    classes is read from the weights: ``fc.weight [10, 2048]`` → ``{"num_classes": 10}``.
    Anything else (missing keys, other shapes) is left for the strict load to report.

    Args:
        name: a registry name (built-in or ``torchvision/…``/``timm/…``).
        shapes: parameter name → shape, as in the uploaded file.

    Returns:
        The overrides, empty when the default build already fits (or nothing can be inferred).
    """
    from nncompress.models.registry import get

    if not is_library_name(name):
        return {}  # built-ins are built as registered; their factories need not take num_classes
    arch = get(name)
    model = _build_meta(arch)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    differing = sorted(k for k in expected if k in shapes and tuple(shapes[k]) != expected[k])
    if not differing:
        return {}
    owners = {k.rpartition(".")[0] for k in differing}
    if len(owners) != 1:
        return {}
    owner = owners.pop()
    head = dict(model.named_modules()).get(owner)
    if not isinstance(head, nn.Linear | nn.Conv2d) or owner != _last_head(model):
        return {}
    classes = {int(shapes[k][0]) for k in differing if len(shapes[k]) >= 1}
    # Only the output dimension may differ; every other dimension must match the built head.
    if len(classes) != 1 or any(tuple(shapes[k][1:]) != expected[k][1:] for k in differing):
        return {}
    return {"num_classes": classes.pop()}


def build_for_state(name: str, shapes: Mapping[str, Sequence[int]]) -> nn.Module:
    """Builds architecture ``name`` so that weights of ``shapes`` fit it (see :func:`state_overrides`).

    Args:
        name: registry name.
        shapes: parameter name → shape of the weights to load.

    Returns:
        A freshly initialised model (random weights); load the state_dict onto it strictly.

    Raises:
        KeyError: unknown architecture (LibraryUnavailableError when its library is missing).
    """
    from nncompress.models.registry import get

    return get(name).build(**state_overrides(name, shapes))


# --- per library ---------------------------------------------------------------------------------


def _torchvision_arch(model: str) -> Architecture:
    import torchvision.models as tvm

    if model not in _plain_names("torchvision"):
        raise KeyError(_unknown_message("torchvision", model))
    size = _TORCHVISION_SIZES.get(model, 224)
    kwargs: dict[str, object] = {"weights": None}
    if model == "inception_v3":
        kwargs["aux_logits"] = False  # the aux head only runs in training and returns a tuple there
        kwargs["init_weights"] = False
    elif model == "googlenet":
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    return Architecture(
        name=f"torchvision/{model}",
        factory=functools.partial(_call_builder, tvm.get_model_builder(model)),
        input_shape=(1, 3, size, size),
        num_classes=1000,
        description=f"torchvision {model} (random weights)",
        kwargs=kwargs,
    )


def _timm_arch(model: str) -> Architecture:
    import timm

    base = model.partition(".")[0]
    if not timm.is_model(base):
        raise KeyError(_unknown_message("timm", model))
    try:
        cfg = timm.get_pretrained_cfg(model)
    except RuntimeError:  # a tag the model does not have: "resnet18.nope"
        raise KeyError(f"timm model {base!r} has no pretrained tag {model.partition('.')[2]!r}") from None
    input_size = tuple(cfg.input_size) if cfg is not None and cfg.input_size else _DEFAULT_IMAGE[1:]
    num_classes = cfg.num_classes if cfg is not None else None
    return Architecture(
        name=f"timm/{model}",
        factory=functools.partial(timm.create_model, model),
        input_shape=(1, *input_size),
        num_classes=num_classes,
        description=f"timm {model} (random weights)",
        kwargs={"pretrained": False},
    )


def _call_builder(builder: Callable[..., nn.Module], **kwargs: object) -> nn.Module:
    return builder(**kwargs)


@functools.lru_cache(maxsize=2)
def _plain_names_cached(library: str) -> tuple[str, ...]:
    if library == "torchvision":
        import torchvision.models as tvm

        # Classification models only: detection/segmentation/video models take other inputs and
        # return dicts or lists the pipeline does not evaluate.
        return tuple(sorted(tvm.list_models(module=tvm)))
    import timm

    return tuple(sorted(timm.list_models()))


def _plain_names(library: str) -> tuple[str, ...]:
    _import(library)
    return _plain_names_cached(library)


def _import(library: str) -> None:
    try:
        importlib.import_module(library)
    except ImportError as exc:
        raise LibraryUnavailableError(
            f"{library} is not installed on this deployment, so '{library}/…' architectures are "
            f"unavailable; ask the operator to install the 'models' extra, or upload ONNX"
        ) from exc


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _examples(names: list[str]) -> list[str]:
    preferred = [n for n in names if n.rsplit("/", 1)[-1] in _FAVOURITES]
    return (preferred + [n for n in names if n not in preferred])[:_EXAMPLES]


_FAVOURITES = frozenset(
    {"resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_tiny_patch16_224"}
)


def _unknown_message(library: str, model: str) -> str:
    close = difflib.get_close_matches(model, _plain_names(library), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(f'{library}/{c}' for c in close)}?" if close else ""
    return f"{library} has no model {model!r}{hint}"


def _build_meta(arch: Architecture) -> nn.Module:
    from nncompress.models.meta import build_on_meta

    # Shapes only: the meta device allocates nothing, so even a large backbone costs milliseconds.
    return build_on_meta(arch.build)


def _last_head(model: nn.Module) -> str | None:
    """Name of the classifier: timm says so itself; otherwise the last Linear/Conv2d registered."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        for name, module in model.named_modules():
            if module is head:
                return name
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            last = name
    return last
