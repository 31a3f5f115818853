"""Data sources for the data-driven pruners, and running a model over them.

A data source is either

* an iterable of batches (a list, a ``DataLoader``): each batch is ``(inputs, targets)`` or just
  ``inputs``; inputs are a tensor, a tuple of tensors (positional) or a dict (keyword); or
* a callable ``(model) -> None`` that runs training or inference steps itself (the user's own loop);
  the pruner's hooks observe whatever it does.

Batches without targets are fine for activation statistics; gradient-based pruners then need a
callable, because the loss cannot be formed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nncompress.errors import ConfigError

__all__ = ["Criterion", "DataSource", "capture_inputs", "require_data", "run_batches"]

DataSource = Iterable[Any] | Callable[[nn.Module], None]
Criterion = Callable[[Any, Any], torch.Tensor]


def require_data(data: DataSource | None, pruner: str, *, needs_criterion: bool, criterion: Any) -> None:
    """Fails early, naming what is missing, when a data-driven pruner lacks its data.

    Raises:
        ConfigError: ``data`` is missing or of the wrong kind, or the loss cannot be computed.
    """
    if data is None:
        raise ConfigError(
            f"{pruner} ranks channels from data: pass data= an iterable of (inputs, targets) "
            "batches or a callable (model) -> None that runs training/inference steps",
            key="data",
            pruner=pruner,
        )
    if not callable(data) and not isinstance(data, Iterable):
        raise ConfigError(
            f"{pruner}: data must be an iterable of batches or a callable (model) -> None, "
            f"got {type(data).__name__}",
            key="data",
            pruner=pruner,
        )
    if needs_criterion and criterion is None and not _is_callable_source(data):
        raise ConfigError(
            f"{pruner} needs gradients: with batches of data, pass criterion= (e.g. "
            "torch.nn.functional.cross_entropy), or pass data= a callable that runs backward itself",
            key="criterion",
            pruner=pruner,
        )


def _is_callable_source(data: DataSource) -> bool:
    return callable(data) and not isinstance(data, Iterable)


def split_batch(batch: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` from a batch; targets are ``None`` for an inputs-only batch."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    return batch, None


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Runs ``model`` on positional (tuple), keyword (dict) or single-tensor inputs."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def run_batches(
    model: nn.Module,
    data: DataSource,
    *,
    criterion: Criterion | None = None,
    backward: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    max_batches: int | None = None,
    epochs: int = 1,
) -> int:
    """Feeds ``data`` through ``model``; optionally backpropagates and steps an optimizer.

    Args:
        model: the model (its mode is left as the caller set it).
        data: batches, or a callable that runs its own steps (then called once per epoch).
        criterion: ``loss = criterion(outputs, targets)``; needed when ``backward``.
        backward: compute gradients (zeroed before each batch).
        optimizer: stepped after each backward, when given.
        max_batches: stop an epoch after this many batches.
        epochs: passes over ``data``.

    Returns:
        Number of batches run (0 for a callable source).

    Raises:
        ConfigError: a batch has no targets but a loss is needed, or ``data`` yields nothing.
    """
    if _is_callable_source(data):
        for _ in range(epochs):
            data(model)  # type: ignore[operator]
        return 0
    device = _device(model)
    count = 0
    for _ in range(epochs):
        for i, batch in enumerate(data):  # type: ignore[arg-type]
            if max_batches is not None and i >= max_batches:
                break
            inputs, targets = split_batch(batch)
            inputs = _to(inputs, device)
            if not backward:
                with torch.no_grad():
                    call_model(model, inputs)
                count += 1
                continue
            if criterion is None or targets is None:
                raise ConfigError(
                    "gradients need a loss: give batches as (inputs, targets) and pass criterion=",
                    key="data" if targets is None else "criterion",
                )
            model.zero_grad(set_to_none=True)
            loss = criterion(call_model(model, inputs), _to(targets, device))
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            count += 1
    if count == 0:
        raise ConfigError("data yielded no batches", key="data")
    return count


@contextmanager
def capture_inputs(model: nn.Module) -> Iterator[list[Any]]:
    """Records the inputs of the first call to ``model`` (to trace its graph without a dummy input).

    Yields:
        A list that holds, after the first call, one item: a tuple of positional inputs, or a dict
        of keyword inputs.
    """
    seen: list[Any] = []

    def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not seen:
            detached = _detach((args, kwargs))
            seen.append(detached[1] if detached[1] and not detached[0] else detached[0])

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value
