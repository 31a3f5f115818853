"""The registry of architectures known to the engine by name.

Uploaded weights are only ever loaded onto an architecture from this registry (or from an
explicitly enabled pickle path inside a worker), so a name plus a state_dict is a safe intake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    """A named model factory with the input it expects.

    Args:
        name: registry key, e.g. ``"mnist_net"``.
        factory: builds a fresh, randomly initialised model; keyword arguments come from ``kwargs``.
        input_shape: shape of one example input *including* a batch dimension of 1.
        input_dtype: ``torch.float32`` for images, ``torch.long`` for token ids.
        num_classes: outputs of the classifier head, when it is a classifier.
        description: one line for listings.
        kwargs: default keyword arguments passed to ``factory``.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype = torch.float32
    num_classes: int | None = None
    description: str = ""
    kwargs: dict[str, object] = field(default_factory=dict)

    def build(self, **overrides: object) -> nn.Module:
        return self.factory(**{**self.kwargs, **overrides})

    def example_input(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        shape = (batch_size, *self.input_shape[1:])
        if self.input_dtype == torch.long:
            vocab = int(self.kwargs.get("vocab_size", 100))  # type: ignore[call-overload]
            return torch.randint(0, vocab, shape, generator=generator)
        return torch.randn(shape, generator=generator)


_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture, *, replace: bool = False) -> Architecture:
    """Adds an architecture; refuses to shadow an existing name unless ``replace``."""
    if arch.name in _REGISTRY and not replace:
        raise ValueError(f"architecture {arch.name!r} is already registered")
    _REGISTRY[arch.name] = arch
    return arch


def get(name: str) -> Architecture:
    """Returns the architecture called ``name``; the error lists the known names.

    Besides the registered names, ``torchvision/<model>`` and ``timm/<model>`` resolve lazily when
    that library is installed (see :mod:`nncompress.models.libraries`).

    Raises:
        KeyError: unknown name. For a library name, the message says whether the library is missing
            (``LibraryUnavailableError``, a KeyError) or lists the closest model names.
    """
    _ensure_builtins()
    arch = _REGISTRY.get(name)
    if arch is not None:
        return arch
    from nncompress.models import libraries

    if libraries.is_library_name(name):
        return libraries.resolve(name)
    known = ", ".join(sorted(_REGISTRY)) or "none"
    raise KeyError(
        f"unknown architecture {name!r}; known: {known} (or torchvision/<model>, timm/<model>)"
    ) from None


def names() -> list[str]:
    """The registered (built-in and deployment) names only; library models are listed by
    :func:`nncompress.models.libraries.library_families`, since timm alone has ~1,300."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def _ensure_builtins() -> None:
    # Imported lazily so that importing the registry does not build the zoo's modules.
    from nncompress.models import zoo  # noqa: F401
