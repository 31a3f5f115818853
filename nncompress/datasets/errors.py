"""The error a malformed data set raises: what is wrong, where, and what was expected."""

from __future__ import annotations

from nncompress.errors import NncompressError

__all__ = ["DatasetError"]


class DatasetError(NncompressError):
    """A data set is malformed, unsafe or does not fit the model (the service answers 422).

    ``context`` names the array or archive entry (``array``, ``index``, ``entry``), and where it
    applies ``expected`` and ``got``.
    """

    code = "invalid_dataset"
