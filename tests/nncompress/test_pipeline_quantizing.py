"""The quantizing stage's accuracy of an ONNX model: the same Scorer, so the same figures as torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nncompress.datasets import LabelledDataset
from nncompress.finetune.evaluate import evaluate
from nncompress.io.onnx_export import export_onnx
from nncompress.pipeline.quantizing import onnx_evaluate
from nncompress.pipeline.training import JobData
from tests.nncompress.quantize.factories import mnist, trained_net


def _job_data(x: torch.Tensor, y: torch.Tensor) -> JobData:
    data = LabelledDataset(x=x, y=y, num_classes=10, source_format="arrays", sha256="", source_bytes=0)
    return JobData(train=data, val=data, summary={})


def test_onnx_accuracy_equals_the_torch_models(tmp_path: Path) -> None:
    # 300 samples: more than one batch of 256, so the figures are summed over batches.
    net = trained_net()
    x, y = mnist(300)
    data = _job_data(x, y)
    path = export_onnx(net, x[:1], tmp_path / "model.onnx")

    got = onnx_evaluate(path, data)
    want = evaluate(net, data.val).to_dict()

    assert list(got) == ["top1", "top5", "loss", "samples"]
    assert got["samples"] == want["samples"] == 300
    assert got["top1"] == pytest.approx(want["top1"], abs=1 / 300)
    assert got["top5"] == pytest.approx(want["top5"], abs=1 / 300)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)


def test_a_loss_that_is_not_finite_is_reported_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    class _Session:
        def run(self, x: np.ndarray) -> list[np.ndarray]:
            return [np.full((len(x), 10), -np.inf, dtype=np.float32)]

    def load(path: Any, *, threads: int | None = None) -> _Session:
        return _Session()

    monkeypatch.setattr("nncompress.quantize.load_quantized", load)
    x, y = mnist(8)

    got = onnx_evaluate(Path("unused.onnx"), _job_data(x, y))

    assert got["loss"] is None and got["samples"] == 8 and 0.0 <= got["top1"] <= 1.0
