"""The deployment's data set caps, read by the upload route and the job's loader alike."""

from __future__ import annotations

from core.settings import Settings
from nncompress.datasets import DatasetLimits

__all__ = ["dataset_limits"]


def dataset_limits(settings: Settings) -> DatasetLimits:
    """The caps ``NNCOMPRESS_DATASET_MAX_*`` as the engine's :class:`DatasetLimits`."""
    return DatasetLimits(
        max_ratio=settings.dataset_max_ratio,
        max_image_pixels=settings.dataset_max_image_pixels,
        max_samples=settings.dataset_max_samples,
        max_decoded_bytes=settings.dataset_max_decoded_bytes,
        max_archive_entries=settings.dataset_max_archive_entries,
        max_unpacked_bytes=settings.dataset_max_unpacked_bytes,
        max_classes=settings.dataset_max_classes,
    )
