"""Building a model's structure without its weights: shapes for validation, no memory for parameters.

``torch.device("meta")`` as a context makes *every* tensor a meta tensor, which is free, but some builders
compute with tensors while they construct the model (torchvision's RegNet derives its block widths with
``torch.round(...).tolist()``, which a meta tensor cannot answer). For those, :func:`empty_parameters` lets
ordinary arithmetic run on the CPU and moves only the parameters and buffers to ``meta`` as they are
registered, so each one is allocated for a moment, one at a time, never the whole model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["build_on_meta", "empty_parameters"]


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Within the block, parameters and buffers registered on any module are moved to ``meta``."""
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer_on_meta(
        self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        if tensor is not None and tensor.device.type != "meta":
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent=persistent)

    nn.Module.register_parameter = parameter_on_meta  # type: ignore[method-assign]
    nn.Module.register_buffer = buffer_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def build_on_meta(factory: Callable[..., nn.Module], /, *args: Any, **kwargs: Any) -> nn.Module:
    """``factory(*args, **kwargs)`` with every parameter and buffer on the ``meta`` device.

    Tries the free way first (everything on ``meta``); a builder that needs real numbers while it builds
    is retried with only its parameters and buffers sent to ``meta``.
    """
    try:
        with torch.device("meta"):
            return factory(*args, **kwargs)
    except (NotImplementedError, RuntimeError):
        pass
    with empty_parameters():
        return factory(*args, **kwargs)
