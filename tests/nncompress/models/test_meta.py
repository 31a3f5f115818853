"""Structure without weights: builders that compute while they build still get meta parameters."""

from __future__ import annotations

import pytest
from torch import nn

from nncompress.models import get
from nncompress.models.meta import build_on_meta


def test_a_builder_that_computes_while_building_gets_meta_parameters() -> None:
    pytest.importorskip("torchvision")
    # RegNet derives its widths with torch.round(...).tolist(): impossible under torch.device("meta").
    model = build_on_meta(get("torchvision/regnet_x_400mf").build, num_classes=10)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert {b.device.type for b in model.buffers()} == {"meta"}
    assert model.fc.out_features == 10
    # The registration hooks are put back: a module built afterwards is an ordinary one.
    assert nn.Linear(2, 2).weight.device.type == "cpu"
