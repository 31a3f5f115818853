"""The errors a malformed or oversized data set raises: what is wrong, where, and what was expected."""

from __future__ import annotations

from typing import Any

from nncompress.errors import NncompressError

__all__ = ["DatasetError", "DatasetLimitError"]


class DatasetError(NncompressError):
    """A data set is malformed, unsafe or does not fit the model (the service answers 422).

    ``context`` names the array or archive entry (``array``, ``index``, ``entry``), and where it
    applies ``expected`` and ``got``.
    """

    code = "invalid_dataset"


class DatasetLimitError(DatasetError):
    """A data set expands beyond one of the caps of :class:`~nncompress.datasets.limits.DatasetLimits`
    (the service answers 413).

    ``code`` names the cap, ``dataset_<cap>_exceeded`` (``dataset_max_image_pixels_exceeded``...),
    and ``context`` holds ``limit`` (the setting's name), ``maximum`` and ``got``.
    """

    code = "dataset_limit_exceeded"

    def __init__(self, message: str, *, limit: str, maximum: int | float, **context: Any) -> None:
        super().__init__(message, limit=f"dataset_{limit}", maximum=maximum, **context)
        self.code = f"dataset_{limit}_exceeded"
