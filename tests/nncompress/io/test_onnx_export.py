"""export_onnx / check_onnx: onnxruntime computes what torch computes, for pruned models too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nncompress.errors import ArtifactError
from nncompress.io import check_onnx, export_onnx
from nncompress.models.mnist import Net
from tests.nncompress.io.conftest import Pruned, prune_and_speedup


def _run_ort(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    return session.run(None, {name: x.numpy()})[0]


def test_pruned_seed_net_matches_onnxruntime(pruned_net: Pruned, tmp_path: Path) -> None:
    path = export_onnx(pruned_net.model, pruned_net.example, tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for batch in (1, 64):  # the batch dimension is dynamic
        x = torch.randn(batch, 1, 28, 28)
        with torch.inference_mode():
            expected = pruned_net.model(x).numpy()
        np.testing.assert_allclose(_run_ort(path, x), expected, atol=1e-4, rtol=1e-4)
    report = check_onnx(path, pruned_net.model, pruned_net.example, atol=1e-4, batch_sizes=(1, 64))
    assert report.max_abs_diff < 1e-4 and report.batch_sizes == (1, 64)


def test_pruned_residual_model_matches_onnxruntime(tmp_path: Path) -> None:
    config = [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}]
    pruned = prune_and_speedup("resnet18_cifar", config)
    path = export_onnx(pruned.model, pruned.example, tmp_path / "resnet.onnx")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = pruned.model(x).numpy()
    np.testing.assert_allclose(_run_ort(path, x), expected, atol=1e-4, rtol=1e-4)


def test_static_batch_export_rejects_other_batches(tmp_path: Path) -> None:
    model = Net().eval()
    path = export_onnx(model, torch.randn(1, 1, 28, 28), tmp_path / "static.onnx", dynamic_batch=False)
    check_onnx(path, model, torch.randn(1, 1, 28, 28), batch_sizes=(1,))
    with pytest.raises(ArtifactError, match="batch 3"):
        check_onnx(path, model, torch.randn(1, 1, 28, 28), batch_sizes=(3,))


def test_check_onnx_catches_a_different_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    exported, other = Net().eval(), Net().eval()
    x = torch.randn(1, 1, 28, 28)
    path = export_onnx(exported, x, tmp_path / "a.onnx")
    with pytest.raises(ArtifactError, match="differs from torch") as info:
        check_onnx(path, other, x)
    assert info.value.context["max_abs_diff"] > 1e-4


def test_export_leaves_training_mode_alone(tmp_path: Path) -> None:
    model = Net().train()
    export_onnx(model, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx")
    assert model.training


def test_recurrent_model_keeps_a_dynamic_batch(tmp_path: Path) -> None:
    # torch.export specialises a batch of 1; traced at batch 1, nn.LSTM came out with a fixed batch.
    from nncompress.models import get

    arch = get("lstm_classifier")
    torch.manual_seed(0)
    model = arch.build().eval()
    path = export_onnx(model, arch.example_input(1), tmp_path / "lstm.onnx")
    report = check_onnx(path, model, arch.example_input(1), batch_sizes=(1, 3))
    assert report.max_abs_diff < 1e-4


def test_a_model_that_pins_its_batch_is_caught(tmp_path: Path) -> None:
    from nncompress.io.onnx_export import export_onnx_with_info

    class Pinned(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(int(x.shape[0]), -1) * 2  # int() turns the batch into a constant

    model = Pinned().eval()
    path, exporter = export_onnx_with_info(model, torch.randn(1, 4, 4), tmp_path / "pinned.onnx")
    # torch.export pins the batch and "succeeds"; that file is refused and the fallback used instead…
    assert exporter.startswith("torchscript")
    # …which bakes the constant too, so the check refuses the result rather than shipping it.
    with pytest.raises(ArtifactError, match="batch 3"):
        check_onnx(path, model, torch.randn(1, 4, 4), batch_sizes=(1, 3))


def test_exporter_can_be_chosen_and_is_reported(tmp_path: Path) -> None:
    from nncompress.io.onnx_export import export_onnx_with_info
    from nncompress.models import get

    model, x = Net().eval(), torch.randn(1, 1, 28, 28)
    for exporter, label in [
        ("dynamo", "torch.export"),
        ("torchscript", "torchscript"),
        ("auto", "torch.export"),
    ]:
        path, used = export_onnx_with_info(model, x, tmp_path / f"{exporter}.onnx", exporter=exporter)
        assert used.startswith(label)
        assert check_onnx(path, model, x).max_abs_diff < 1e-4
    # Recurrent models go to the TorchScript exporter first (torch.export took 12-38 s on them).
    gru = get("gru_classifier").build().eval()
    _, used = export_onnx_with_info(gru, get("gru_classifier").example_input(1), tmp_path / "gru.onnx")
    assert used.startswith("torchscript")
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(model, x, tmp_path / "x.onnx", exporter="tflite")
