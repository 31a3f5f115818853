"""Explains a shrunk model that crashes: which operation failed, where in the source, and how to fix it."""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nncompress.errors import VerificationError

Inputs = tuple[torch.Tensor, ...]

_TORCH_DIR = str(Path(torch.__file__).parent)
_OWN_DIR = str(Path(__file__).parent)
_SHAPE_OPS = {"view", "reshape", "expand", "repeat", "unflatten"}


class _LastOp(TorchFunctionMode):
    """Remembers the most recent torch call and the shapes it saw, so a crash can be attributed."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.args: tuple[object, ...] = ()
        self.input_shape: tuple[int, ...] | None = None
        self.last_shape_call: str | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.name = getattr(func, "__name__", str(func))
        self.args = tuple(args[1:]) if args and isinstance(args[0], torch.Tensor) else tuple(args)
        self.input_shape = tuple(args[0].shape) if args and isinstance(args[0], torch.Tensor) else None
        if self.name in _SHAPE_OPS and _has_int(self.args):
            # A reshape with literal sizes that "succeeds" can still fold the batch (view(-1, 800) on two
            # half-size samples); the crash then comes later, so remember it.
            self.last_shape_call = (
                f"{self.name}({_format_args(self.args)}) on a tensor of shape {self.input_shape}"
            )
        return func(*args, **(kwargs or {}))


def _has_int(args: tuple[object, ...]) -> bool:
    return any(
        isinstance(a, int) or (isinstance(a, list | tuple) and any(isinstance(i, int) for i in a))
        for a in args
    )


def _user_frame(exc: BaseException) -> str | None:
    """``file:line: code`` of the innermost frame outside torch (the model's own forward)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_TORCH_DIR)]
    frames = [f for f in frames if not f.filename.startswith(_OWN_DIR)]
    if not frames:
        return None
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno}: {(frame.line or '').strip()}"


def _format_args(args: tuple[object, ...]) -> str:
    parts = []
    for arg in args:
        if isinstance(arg, torch.Tensor):
            parts.append(f"<tensor {tuple(arg.shape)}>")
        elif isinstance(arg, list | tuple) and all(isinstance(a, int) for a in arg):
            parts.extend(str(a) for a in arg)
        else:
            parts.append(repr(arg))
    return ", ".join(parts)


def forward_failure(
    model: nn.Module, batch: Inputs, exc: BaseException, *, trace_error: str | None = None
) -> VerificationError:
    """Builds the VerificationError for a shrunk model whose forward raised ``exc``.

    The forward is re-run under a torch function mode to learn the last operation before the crash.

    Args:
        model: the shrunk model that failed.
        batch: the input it failed on.
        exc: the original exception.
        trace_error: why torch.fx could not trace the model (so its shape constants could not be rewritten).

    Returns:
        The error to raise (its context holds the op, its arguments, the source line and the cause).
    """
    recorder = _LastOp()
    cause = exc
    try:
        with torch.inference_mode(), recorder:
            model(*batch)
    except Exception as again:  # the same crash, now with the op recorded
        cause = again
    op = recorder.name or "unknown operation"
    call = f"{op}({_format_args(recorder.args)})"
    on = f" on a tensor of shape {recorder.input_shape}" if recorder.input_shape is not None else ""
    where = _user_frame(cause)
    message = f"the shrunk model fails at {call}{on}"
    if where:
        message += f" ({where})"
    message += f": {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}."
    if op in _SHAPE_OPS:
        message += (
            " The forward hard-codes a shape that pruning changed"
            + (
                f", and torch.fx could not trace the model to rewrite it ({trace_error})"
                if trace_error
                else ""
            )
            + ". Compute it from the tensor instead, e.g. use torch.flatten(x, 1) or x.view(x.size(0), -1) "
            "instead of x.view(-1, 800)."
        )
    else:
        if recorder.last_shape_call:
            message += (
                f" The last reshape before it was {recorder.last_shape_call}: if its sizes are hard-coded, "
                "compute them from the tensor instead, e.g. torch.flatten(x, 1) instead of x.view(-1, 800)."
            )
        if trace_error:
            message += (
                f" torch.fx could not trace the model ({trace_error}), so no shape rewrite was attempted."
            )
    return VerificationError(
        message,
        op=op,
        args=_format_args(recorder.args),
        source=where,
        cause=str(cause),
        last_reshape=recorder.last_shape_call,
    )
