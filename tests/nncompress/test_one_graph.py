"""Issue 14, one channel graph: preflight, the pruner and the speedup read one trace of the model, and what
preflight promises for every selected layer is exactly what the speedup does (for each mechanism's own small
model, at batch 1 and 2); a job traces the model once for pruning and speedup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nncompress import preflight, prune, speedup
from nncompress.graph import ChannelGraph, channel_graph
from nncompress.layers import out_width
from nncompress.models.mnist import Net
from tests.nncompress.test_graph_mechanisms import GroupedBlock, SplitShuffle
from tests.nncompress.test_norm_families import MiniFrozenBN, MiniGroupNorm, MiniLayerNorm
from tests.nncompress.test_recurrent_pruning import CASES, TextRNN

Build = Callable[[int], tuple[nn.Module, torch.Tensor, str]]


def _image(batch: int, size: int = 16) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def _text_rnn(case: str) -> Build:
    def build(batch: int) -> tuple[nn.Module, torch.Tensor, str]:
        model = TextRNN(**CASES[case])  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(0)
        x = (
            torch.randint(0, 50, (batch, 7), generator=g)
            if model.tokens
            else torch.randn(batch, 7, 8, generator=g)
        )
        return model, x, "fc"

    return build


MODELS: dict[str, Build] = {
    "seed_net": lambda b: (
        Net(),
        torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
        "fc2",
    ),
    "grouped_block": lambda b: (GroupedBlock(), _image(b), "fc"),
    "split_shuffle": lambda b: (SplitShuffle(), _image(b, 8), "fc"),
    "group_norm": lambda b: (MiniGroupNorm(), _image(b), "fc"),
    "frozen_bn": lambda b: (MiniFrozenBN(), _image(b), "fc"),
    "layer_norm": lambda b: (
        MiniLayerNorm(),
        torch.randint(0, 50, (b, 6), generator=torch.Generator().manual_seed(0)),
        "head",
    ),
    **{f"rnn_{case}": _text_rnn(case) for case in CASES},
}
_OP_TYPES = ["Conv2d", "Linear", "Embedding", "LSTM", "GRU"]


def _config(head: str) -> list[dict[str, Any]]:
    return [{"sparsity_per_layer": 0.5, "op_types": _OP_TYPES}, {"exclude": True, "op_names": [head]}]


def _width(module: nn.Module) -> int:
    if isinstance(module, nn.LSTM | nn.GRU):
        return int(module.hidden_size)
    if isinstance(module, nn.Embedding):
        return int(module.embedding_dim)
    width = out_width(module)
    return width if width is not None else int(getattr(module, "out_channels", -1))


@pytest.fixture
def traces(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the traces of a model into a dependency graph (by the traced model's class name)."""
    seen: list[str] = []
    real = channel_graph.trace

    def counting(model: nn.Module, example_inputs: Any) -> Any:
        seen.append(type(model).__name__)
        return real(model, example_inputs)

    monkeypatch.setattr(channel_graph, "trace", counting)
    return seen


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", list(MODELS))
def test_preflight_promise_is_what_the_speedup_does(name: str, batch: int, traces: list[str]) -> None:
    torch.manual_seed(0)
    model, x, head = MODELS[name](batch)
    model.eval()
    config = _config(head)

    graph = ChannelGraph.build(model, x)
    report = preflight(model, config, x, graph=graph)
    result = prune(model, config, pruner="l1norm", example_inputs=x, graph=graph)
    shrunk = speedup(model, result.masks, x, graph=graph)

    assert traces == [type(model).__name__], "preflight, pruner and speedup must share one trace"
    assert shrunk.verification is not None and shrunk.verification.passed
    assert report.will_shrink and shrunk.smaller
    modules = dict(shrunk.model.named_modules())
    for layer in report.layers:
        if layer.channels_after is None:
            continue
        got = _width(modules[layer.name])
        assert got == layer.channels_after, (
            f"preflight promised {layer.name} → {layer.channels_after}, got {got}"
        )
    # what preflight calls blocked keeps its width, what it promises to shrink did shrink
    blocked = {entry.split(":", 1)[0] for entry in report.blocked_by}
    for name_ in blocked:
        assert _width(modules[name_]) == _width(model.get_submodule(name_))


def test_gru_classifier_at_batch_one_prunes_its_hidden_units() -> None:
    # The service's default input is a batch of one. It used to be traced as an *unbatched* call
    # (Torch-Pruning's fallback runs model(*x), which nn.GRU accepts): the state h[-1] then fed the
    # head through a reshape and an addmm, and looked mixed with other features.
    torch.manual_seed(0)
    model, x, head = _text_rnn("gru_state")(1)
    model.eval()
    config = _config(head)
    report = preflight(model, config, x)
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    shrunk = speedup(model, result.masks, x)

    assert not result.warnings, result.warnings
    assert (report.layer("rnn").channels, report.layer("rnn").channels_after) == (32, 16)
    assert shrunk.model.rnn.hidden_size == 16 and shrunk.model.fc.in_features == 16
    assert shrunk.verification is not None and shrunk.verification.passed


def test_a_job_traces_the_model_once_for_pruning_and_speedup(tmp_path: Path, traces: list[str]) -> None:
    from nncompress.pipeline import JobSpec, run_job

    spec = JobSpec.from_dict(
        {
            "pruner": "l1norm",
            "config_list": [
                {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
                {"exclude": True, "op_names": ["fc2"]},
            ],
            "latency_runs": 2,
        }
    )
    result = run_job(spec, model=Net(), architecture="mnist_net", out_dir=tmp_path)

    assert result.speedup_applied and result.metrics_after.params < result.metrics_before.params
    # one trace of the original for pruner + speedup; one more reloading the artifact onto a fresh
    # instance, which is what another process does with the manifest's kept indices
    assert traces == ["Net", "Net"]
