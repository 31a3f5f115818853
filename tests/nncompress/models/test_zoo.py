"""Every built-in architecture builds, runs at several batch sizes and declares the input it expects."""

from __future__ import annotations

import pytest
import torch

from nncompress.models import get, names
from tests.nncompress.models.builtin_names import BUILTIN_ARCHITECTURES

EXPECTED = set(BUILTIN_ARCHITECTURES)


def test_zoo_registers_every_family() -> None:
    assert set(names()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("batch", [1, 3])
def test_architecture_runs_on_its_declared_input(name: str, batch: int) -> None:
    arch = get(name)
    model = arch.build().eval()
    x = arch.example_input(batch, generator=torch.Generator().manual_seed(0))
    assert x.dtype == arch.input_dtype
    with torch.inference_mode():
        out = model(x)
    assert out.shape[0] == batch
    if arch.num_classes is not None:
        assert out.shape == (batch, arch.num_classes)
    assert torch.isfinite(out).all()


def test_resnet18_cifar_has_the_reference_size() -> None:
    model = get("resnet18_cifar").build()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962


def test_dense_pixel_models_keep_spatial_size() -> None:
    for name in ("unet", "fpn"):
        arch = get(name)
        with torch.inference_mode():
            out = arch.build().eval()(arch.example_input(2))
        assert out.shape[-2:] == arch.input_shape[-2:], name


def test_recurrent_classifier_rejects_unknown_cell() -> None:
    from nncompress.models.recurrent import RecurrentClassifier

    with pytest.raises(ValueError, match="cell must be one of"):
        RecurrentClassifier("rnn")
