"""Speedup benchmark: masks -> verified smaller model, per zoo architecture (run by hand, prints markdown).

For each architecture: time to compute 50% channel masks (the project's L1NormPruner), time of the
speedup itself and of its verification, latency before/after at batch 1 and 64 (median over repeated
runs under ``torch.inference_mode``), the MACs ratio (``torch.utils.flop_counter``), and Torch-Pruning's
own time for a comparable 50% magnitude pruning of the same model in the same run.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speedup.py [--archs resnet18_cifar vgg_bn] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nncompress.models import get, names
from nncompress.speedup import speedup

OP_TYPES = ["Conv2d", "Linear", "Embedding", "LSTM", "GRU"]


def _masks(name: str, model: nn.Module, x: torch.Tensor) -> tuple[dict, str]:
    """50% channel masks: the project's L1NormPruner where it covers the model, else the test factory.

    Attention must lose whole heads to stay exact, and the pruner does not mask recurrent hidden units,
    so for those models the test factory (L1 norm summed over each coupled group) picks the channels.
    """
    if name in ("transformer_classifier", "lstm_classifier", "gru_classifier"):
        from tests.nncompress.speedup.masking import l1_channel_masks

        blocks = {"attn": 16} if name == "transformer_classifier" else None
        return l1_channel_masks(model, x, 0.5, blocks=blocks), "test factory"
    from nncompress.pruners import prune

    return prune(
        model, [{"sparsity_per_layer": 0.5, "op_types": OP_TYPES}], example_inputs=x
    ).masks, "L1NormPruner"


def _latency_ms(before: nn.Module, after: nn.Module, x: torch.Tensor, budget_s: float) -> tuple[float, float]:
    """Median latency in ms of both models, runs interleaved so that CPU contention hits both alike.

    Warms up once each, then alternates until ``budget_s`` is spent (at least 5, at most 200 pairs).
    """
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        before(x)
        after(x)
        start = time.perf_counter()
        while len(times[0]) < 5 or (time.perf_counter() - start < budget_s and len(times[0]) < 200):
            for model, bucket in ((before, times[0]), (after, times[1])):
                t = time.perf_counter()
                model(x)
                bucket.append(time.perf_counter() - t)
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def _macs(model: nn.Module, x: torch.Tensor) -> float:
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return float("nan")  # FlopCounterMode has no formula for LSTM/GRU: a ratio would mislead
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return counter.get_total_flops() / 2


def _torch_pruning_time(model: nn.Module, x: torch.Tensor) -> str:
    """Torch-Pruning's own graph build + 50% magnitude pruning, output layers ignored."""
    try:
        import torch_pruning as tp
    except ImportError:
        return "n/a"
    work = copy.deepcopy(model)
    with torch.inference_mode():
        out = work(x)
    # Like the project's pruner, leave the layer that produces the model's output at full width.
    heads = [
        m
        for m in work.modules()
        if (isinstance(m, nn.Linear) and m.out_features == out.shape[1])
        or (isinstance(m, nn.Conv2d) and m.out_channels == out.shape[1])
    ]
    try:
        start = time.perf_counter()
        pruner = tp.pruner.MagnitudePruner(
            work,
            x,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=0.5,
            ignored_layers=heads[-1:],
        )
        pruner.step()
        elapsed = time.perf_counter() - start
    except Exception as exc:  # report, do not abort the table
        return f"prune fails ({type(exc).__name__})"
    try:
        with torch.inference_mode():
            work(x)
    except Exception as exc:
        return f"{elapsed:.3f}, result crashes ({type(exc).__name__})"
    return f"{elapsed:.3f}"


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def run(archs: list[str], budget_s: float) -> str:
    rows = [
        "| arch | masks | params before → after | prune s | speedup s | verify s | masks→verified s "
        "| lat b1 ms before → after | lat b64 ms before → after | b64 latency ratio | MACs ratio "
        "| ratio / MACs ratio | Torch-Pruning prune s |",
        "|" + "---|" * 13,
    ]
    for name in archs:
        arch = get(name)
        torch.manual_seed(0)
        model = arch.build().eval()
        x1 = arch.example_input(1, generator=torch.Generator().manual_seed(0))
        x64 = arch.example_input(64, generator=torch.Generator().manual_seed(1))
        start = time.perf_counter()
        masks, source = _masks(name, model, x1)
        prune_s = time.perf_counter() - start
        start = time.perf_counter()
        result = speedup(model, masks, x1)
        total_s = time.perf_counter() - start
        t = result.timings
        verify_s = t["reference"] + t["run"] + t.get("compare", 0.0)
        shrunk = result.model.eval()
        lat = {}
        for b, x in ((1, x1), (64, x64)):
            lat[(b, "before")], lat[(b, "after")] = _latency_ms(model, shrunk, x, budget_s)
        ratio = lat[(64, "after")] / lat[(64, "before")]
        macs = _macs(shrunk, x64) / _macs(model, x64)
        rows.append(
            f"| {name} | {source} | {result.params_before:,} → {result.params_after:,} | {prune_s:.3f} "
            f"| {total_s - verify_s:.3f} | {verify_s:.3f} | {total_s:.3f} "
            f"| {lat[(1, 'before')]:.2f} → {lat[(1, 'after')]:.2f} "
            f"| {lat[(64, 'before')]:.1f} → {lat[(64, 'after')]:.1f} "
            f"| {ratio:.3f} | {_fmt(macs, 3)} | {_fmt(ratio / macs, 2)} | {_torch_pruning_time(model, x1)} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", nargs="*", default=None, help="zoo names (default: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of repeated runs per latency cell")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU\n")
    # One untimed call first, so one-off costs (lazy imports, first fx trace) land on no row.
    warm, warm_x = get("mnist_net").build().eval(), get("mnist_net").example_input(1)
    speedup(warm, _masks("mnist_net", warm, warm_x)[0], warm_x)
    print(run(args.archs or names(), args.budget))


if __name__ == "__main__":
    main()
