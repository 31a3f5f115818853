"""Splitting is reproducible for a seed and partitions the samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nncompress.datasets import DatasetError, check_compatible, from_arrays, split


def _dataset(n: int = 50):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return from_arrays(x, np.arange(n) % 5)


def test_same_seed_same_split_and_a_partition() -> None:
    ds = _dataset()
    train, val = split(ds, 0.2, seed=3)
    train2, val2 = split(ds, 0.2, seed=3)
    assert len(val) == 10 and len(train) == 40
    assert torch.equal(val.x, val2.x) and torch.equal(train.y, train2.y)
    seen = sorted(train.x[:, 0].tolist() + val.x[:, 0].tolist())
    assert seen == ds.x[:, 0].tolist()
    # Rows stay paired with their labels.
    assert torch.equal((train.x[:, 0] // 4).long() % 5, train.y)


def test_other_seed_other_split() -> None:
    ds = _dataset()
    assert not torch.equal(split(ds, 0.2, seed=0)[1].x, split(ds, 0.2, seed=1)[1].x)


def test_split_does_not_touch_global_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    split(_dataset(), 0.5, seed=9)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction(fraction: float) -> None:
    with pytest.raises(DatasetError, match="val_fraction must be between 0 and 1"):
        split(_dataset(), fraction, seed=0)


def test_too_small_to_split() -> None:
    with pytest.raises(DatasetError, match="training part would be empty"):
        split(_dataset(1), 0.5, seed=0)


def test_more_classes_than_model_outputs() -> None:
    with pytest.raises(DatasetError, match="5 classes but the model outputs 3"):
        check_compatible(_dataset(), input_shape=(4,), num_classes=3)


def test_batches_in_order_with_limit() -> None:
    ds = _dataset(10)
    batches = ds.batches(4)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), ds.x)
    assert [len(y) for _, y in ds.batches(4, limit=2)] == [4, 4]
