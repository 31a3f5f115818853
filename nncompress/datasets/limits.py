"""The caps on what an uploaded data set may expand to, and the checks both readers apply.

Every cap is checked from headers (a zip's directory, an idx or ``.npy`` header, an image's header)
*before* the bytes it bounds are decompressed or decoded, by the streaming validation in the API
(:mod:`nncompress.datasets.scan`) and by the loaders in the job process alike, so a bomb is refused
at the same place on both sides and neither ever holds more than the caps allow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nncompress.datasets.errors import DatasetLimitError

__all__ = ["FLOAT_BYTES", "RATIO_MIN_BYTES", "DatasetLimits"]

# Samples are held as float32 tensors by a job: the decoded-bytes cap is counted in those.
FLOAT_BYTES = 4
# Ratio checks apply only to parts that decode to 1 MiB or more: a small image or file may compress
# 1000:1 honestly (a blank 256x256 PNG), and what it expands to is too small to matter.
RATIO_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class DatasetLimits:
    """What one part of an uploaded data set (the samples file, or its validation part) may hold.

    The field names are the service's settings without their ``dataset_`` prefix, and an error
    names the cap it hit the same way (``dataset_max_ratio_exceeded``...).

    Attributes:
        max_ratio: decoded / compressed size of a zip member, a gzip file or an encoded image,
            for those that decode to 1 MiB or more.
        max_image_pixels: width × height of one image.
        max_samples: samples (and labels) in one part.
        max_decoded_bytes: the samples once decoded, counted as the float32 tensor a job holds
            (``samples × values per sample × 4``).
        max_archive_entries: entries in a zip, directories included (its directory is held in
            memory while the archive is read: about 0.5 KiB per entry).
        max_unpacked_bytes: declared uncompressed size of all members of a zip together.
        max_classes: classes (the largest label + 1); each has a count in the data set's summary.
    """

    max_ratio: float = 200.0
    max_image_pixels: int = 2048 * 2048
    max_samples: int = 1_000_000
    max_decoded_bytes: int = 2 << 30
    max_archive_entries: int = 64_000
    max_unpacked_bytes: int = 2 << 30
    max_classes: int = 100_000

    def check(self, cap: str, got: int | float, what: str, **context: Any) -> None:
        """Raises :class:`DatasetLimitError` when ``got`` exceeds the cap named ``cap``.

        Args:
            cap: a field name, e.g. ``"max_samples"``.
            got: the measured or declared amount.
            what: the subject of the message, e.g. ``"entry 'a/0.png' is 4096x4096 and"``.
            context: where (``entry``, ``file``, ``array``).
        """
        maximum = getattr(self, cap)
        if got > maximum:
            raise DatasetLimitError(
                f"{what} exceeds dataset_{cap} ({_show(got)} > {_show(maximum)})",
                limit=cap,
                maximum=maximum,
                got=got,
                **context,
            )

    def check_ratio(self, decoded: int, compressed: int, what: str, **context: Any) -> None:
        """Refuses a part that expands more than ``max_ratio`` (only parts of 1 MiB or more decoded)."""
        if decoded < RATIO_MIN_BYTES:
            return
        ratio = decoded / max(compressed, 1)
        if ratio > self.max_ratio:
            raise DatasetLimitError(
                f"{what} expands {ratio:.0f}x ({compressed} -> {decoded} bytes); at most "
                f"{self.max_ratio:g}x is allowed (dataset_max_ratio; a decompression bomb?)",
                limit="max_ratio",
                maximum=self.max_ratio,
                got=round(ratio, 1),
                **context,
            )


def _show(value: int | float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"
