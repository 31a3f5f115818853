"""measure_model: every figure is measured on the model and checked against an independent count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nncompress.metrics import file_bytes, measure_model
from nncompress.models.mnist import Net


def _seed_net_counts() -> tuple[int, int]:
    """Parameters and MACs of the seed Net, from its layer shapes (by hand, not by torch)."""
    conv1 = 20 * 1 * 5 * 5 + 20
    conv2 = 50 * 20 * 5 * 5 + 50
    fc1 = 800 * 500 + 500
    fc2 = 500 * 10 + 10
    macs = (
        20 * 24 * 24 * (1 * 5 * 5)  # conv1: 20 maps of 24×24, 25 MACs each
        + 50 * 8 * 8 * (20 * 5 * 5)  # conv2: 50 maps of 8×8 over 20 input channels
        + 800 * 500  # fc1
        + 500 * 10  # fc2
    )
    return conv1 + conv2 + fc1 + fc2, macs


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def test_sizes_and_compute_match_an_independent_count(net: Net) -> None:
    params, macs = _seed_net_counts()
    m = measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(1,), runs=2, warmup=0)
    assert m.params == params == 431_080
    assert m.nonzero_params == params
    assert m.macs == macs and m.flops == 2 * macs
    # float32 data plus a JSON header of a few hundred bytes per tensor at most.
    assert 4 * params < m.state_dict_bytes < 4 * params + 8 * 1024


def test_bytes_are_the_real_serialised_size(net: Net, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(dict(net.state_dict()), str(tmp_path / "w.safetensors"))
    m = measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(1,), runs=1, warmup=0)
    assert m.state_dict_bytes == file_bytes(tmp_path / "w.safetensors")


def test_zeros_show_up_as_sparsity_and_nonzero_params(net: Net) -> None:
    with torch.no_grad():
        net.fc1.weight[:250] = 0.0  # half of fc1's rows
        net.conv1.weight[:5] = 0.0  # a quarter of conv1's filters
    m = measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(1,), runs=1, warmup=0)
    assert m.sparsity["fc1"] == pytest.approx(0.5)
    assert m.sparsity["conv1"] == pytest.approx(0.25)
    assert m.sparsity["conv2"] == 0.0
    assert m.params - m.nonzero_params == 250 * 800 + 5 * 25


def test_latency_is_timed_per_batch_size(net: Net) -> None:
    m = measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(1, 8), runs=7, warmup=2)
    assert [s.batch_size for s in m.latency] == [1, 8]
    for stats in m.latency:
        assert 0 < stats.median_ms <= stats.p90_ms
        assert stats.runs == 7 and stats.warmup == 2
    assert m.latency_at(8) is m.latency[1] and m.latency_at(64) is None
    assert m.device == "cpu" and "inference_mode" in m.latency_method


def test_measuring_leaves_the_model_alone(net: Net) -> None:
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(2,), runs=1, warmup=1)
    assert net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_to_dict_is_json(net: Net) -> None:
    m = measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(1,), runs=1, warmup=0)
    data = json.loads(json.dumps(m.to_dict()))
    assert data["params"] == m.params and data["latency"][0]["batch_size"] == 1


def test_token_inputs_are_batched_too() -> None:
    from nncompress.models import get

    arch = get("lstm_classifier")
    model = arch.build().eval()
    m = measure_model(model, arch.example_input(1), batch_sizes=(1, 4), runs=1, warmup=0)
    assert m.params == sum(p.numel() for p in model.parameters())
    assert [s.batch_size for s in m.latency] == [1, 4]


def test_bad_arguments_are_refused(net: Net) -> None:
    with pytest.raises(ValueError, match="runs"):
        measure_model(net, torch.randn(1, 1, 28, 28), runs=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            measure_model(net, torch.randn(1, 1, 28, 28), device="cuda")


def test_latency_in_bfloat16_times_a_converted_copy(net: Net) -> None:
    m = measure_model(
        net, torch.randn(1, 1, 28, 28), batch_sizes=(2,), runs=2, warmup=1, dtype=torch.bfloat16
    )
    assert m.dtype == "bfloat16" and m.latency[0].median_ms > 0
    assert next(net.parameters()).dtype == torch.float32  # the caller's model is not converted
    assert m.state_dict_bytes > 4 * m.params  # sizes are of the model as given (float32)


def test_cuda_graph_mode_needs_cuda(net: Net) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA"):
        measure_model(net, torch.randn(1, 1, 28, 28), latency_mode="cuda_graph")
    with pytest.raises(ValueError, match="latency_mode"):
        measure_model(net, torch.randn(1, 1, 28, 28), latency_mode="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_latency_replays_a_graph_and_names_the_device(net: Net) -> None:
    m = measure_model(net, torch.randn(1, 1, 28, 28), device="cuda", batch_sizes=(1, 64), runs=20, warmup=5)
    assert m.device.startswith("cuda:") and "synchronize" in m.latency_method
    assert all(s.method == "cuda_graph" for s in m.latency), [s.method for s in m.latency]
    eager = measure_model(
        net, torch.randn(1, 1, 28, 28), device="cuda", batch_sizes=(64,), runs=20, latency_mode="eager"
    )
    assert eager.latency[0].method == "eager" and eager.macs == m.macs
    assert next(net.parameters()).device.type == "cpu"  # a copy was measured


@pytest.mark.parametrize(("cell", "gates"), [(torch.nn.LSTM, 4), (torch.nn.GRU, 3)])
def test_recurrent_layers_are_counted(cell: type[torch.nn.Module], gates: int) -> None:
    # CPU torch runs nn.LSTM as one fused op that FlopCounterMode alone counts as zero.
    rnn = cell(8, 16, num_layers=2, bidirectional=True, batch_first=True).eval()
    steps = 5
    x = torch.randn(3, steps, 8)
    # Per step: weight_ih and weight_hh of each direction; layer 2 reads both directions (2 × 16).
    per_step = 2 * gates * 16 * (8 + 16) + 2 * gates * 16 * (2 * 16 + 16)
    m = measure_model(rnn, x, batch_sizes=(1,), runs=1, warmup=0)
    assert m.macs == steps * per_step  # counted at batch 1


def test_gru_count_matches_its_decomposition() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    gru = torch.nn.GRU(8, 16, batch_first=True).eval()
    x = torch.randn(1, 7, 8)
    plain = FlopCounterMode(display=False)  # no formula for aten.gru: it decomposes into addmm
    with torch.inference_mode(), plain:
        gru(x)
    assert measure_model(gru, x, batch_sizes=(1,), runs=1, warmup=0).flops == plain.get_total_flops() > 0


class _Slow(torch.nn.Module):
    """A forward pass that takes at least ``seconds`` (so a budget's bound on the run count holds on
    any machine: load only makes passes longer)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.seconds)
        return self.linear(x)


def test_latency_stops_at_its_budget_and_says_so() -> None:
    m = measure_model(_Slow(0.02), torch.randn(1, 4), batch_sizes=(1, 2), runs=1000, warmup=5, budget_s=0.2)
    for stats in m.latency:
        # 0.1 s per batch size, ≥ 20 ms per pass: warm-up ends by its second pass (past a quarter,
        # 25 ms), and timed passes go on only while the next one fits: five at most.
        assert stats.stopped == "budget" and 1 <= stats.runs <= 5 and stats.warmup <= 2
        assert stats.q1_ms <= stats.median_ms <= stats.q3_ms and stats.iqr_ms == stats.q3_ms - stats.q1_ms


def test_a_slow_pass_still_gets_one_timed_run() -> None:
    m = measure_model(_Slow(0.05), torch.randn(1, 4), batch_sizes=(1,), runs=20, warmup=3, budget_s=0.01)
    (stats,) = m.latency
    # Longer than half the share: the first (cold) pass is the figure, nothing else is run.
    assert (stats.runs, stats.warmup, stats.stopped, stats.median_ci_ms) == (1, 0, "budget", None)
    assert stats.median_ms >= 50 and stats.iqr_ms == 0


def test_without_a_budget_every_run_asked_for_is_made(net: Net) -> None:
    m = measure_model(net, torch.randn(1, 1, 28, 28), batch_sizes=(1,), runs=9, warmup=1)
    assert (m.latency[0].runs, m.latency[0].stopped) == (9, "runs")
    assert m.latency[0].median_ci_ms is not None


def test_a_median_known_within_two_percent_is_stable() -> None:
    from nncompress.metrics.latency import _stable, _stats

    steady = [10.0, 10.1, 9.9, 10.0, 10.05, 9.95]
    noisy = [10.0, 14.0, 7.0, 12.0, 9.0, 15.0]
    assert _stable(steady) and not _stable(noisy)
    stats = _stats(noisy, batch_size=1, warmup=0, method="eager", stopped="runs")
    assert stats.iqr_ms == pytest.approx(stats.q3_ms - stats.q1_ms)
    assert stats.median_ci_ms == pytest.approx(1.57 * stats.iqr_ms / len(noisy) ** 0.5)
    assert json.dumps(stats.__dict__)  # JSON-able as the report writes it


def test_time_a_figure_leaves_goes_to_the_next_and_each_records_its_share() -> None:
    m = measure_model(_Slow(0.02), torch.randn(1, 4), batch_sizes=(1, 2), runs=3, warmup=1, budget_s=1.0)
    first, second = m.latency
    # Three runs of ≥ 20 ms end batch 1 well inside its half: batch 2 gets all that is left.
    assert first.stopped == "runs" and first.budget_s == 0.5 and first.elapsed_s >= 0.08
    assert second.budget_s == pytest.approx(1.0 - first.elapsed_s)
    assert second.elapsed_s >= 0.08 and m.latency_skipped == ()


def test_under_fit_budget_a_batch_whose_one_pass_exceeds_the_budget_is_left_out() -> None:
    m = measure_model(
        _Slow(0.05), torch.randn(1, 4), batch_sizes=(1, 64), runs=2, warmup=0, budget_s=1.0, fit_budget=True
    )
    # One batch-1 pass takes ≥ 50 ms, so one batch-64 pass is predicted at ≥ 3.2 s: over the 1 s.
    assert [s.batch_size for s in m.latency] == [1] and m.latency_at(64) is None
    (reason,) = m.latency_skipped
    assert reason.startswith("batch 64: one pass would take about") and "1.0 s budget" in reason
    assert json.dumps(m.to_dict())


def test_without_fit_budget_every_batch_size_gets_a_pass() -> None:
    m = measure_model(_Slow(0.05), torch.randn(1, 4), batch_sizes=(1, 64), runs=2, warmup=0, budget_s=0.1)
    assert [s.batch_size for s in m.latency] == [1, 64] and m.latency_skipped == ()
