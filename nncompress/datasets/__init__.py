"""Labelled data sets for evaluation and fine-tuning: loading, validation and splitting.

Formats: ``.npz`` with ``x``/``y``, MNIST idx files (gzip or raw), ImageFolder zips. Every loader
returns a :class:`LabelledDataset`; every malformed or unsafe input raises :class:`DatasetError`
(code ``invalid_dataset``) naming what is wrong, and one larger than a cap of
:class:`DatasetLimits` a :class:`DatasetLimitError` naming the cap. :func:`scan_dataset` validates
a file the same way in a bounded footprint, without holding its samples.

Example:
    >>> from nncompress.datasets import load_dataset, split
    >>> ds = load_dataset("upload.zip", num_classes=10, input_shape=(1, 28, 28))
    >>> train, val = split(ds, val_fraction=0.1, seed=0)
"""

from nncompress.datasets.core import (
    DatasetSummary,
    LabelledDataset,
    check_compatible,
    from_arrays,
    split,
)
from nncompress.datasets.errors import DatasetError, DatasetLimitError
from nncompress.datasets.limits import DatasetLimits
from nncompress.datasets.load import FORMATS, detect_format, load_dataset, load_mnist_idx
from nncompress.datasets.scan import scan_dataset

__all__ = [
    "FORMATS",
    "DatasetError",
    "DatasetLimitError",
    "DatasetLimits",
    "DatasetSummary",
    "LabelledDataset",
    "check_compatible",
    "detect_format",
    "from_arrays",
    "load_dataset",
    "load_mnist_idx",
    "scan_dataset",
    "split",
]
