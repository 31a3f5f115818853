"""Big graphs: Swin-T (torchvision and timm) and ViT-B/16 at 224, masks → verified, time and peak memory.

For each model (random weights, nothing downloaded): ``preflight`` → ``prune`` (l1norm, 50% of Conv2d and
Linear, the head excluded) → ``speedup`` (verified against the masked model). Reports params before → after,
seconds per stage, the peak resident memory of the process (ru_maxrss) and whether verification passed. Each
model runs in its own process under a time limit, so a graph that never finishes shows as a timeout. The
issue's target: Swin-T- or ViT-B-sized masks → verified under 60 s and 4 GiB on a 2-core CPU.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/big_graphs.py [--only NAME ...] [--limit-s 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=10)

    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10)

    return build


MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "tv_swin_t": (_torchvision("swin_t"), "head"),
    "timm_swin_tiny_patch4_window7_224": (_timm("swin_tiny_patch4_window7_224"), "head.fc"),
    "tv_vit_b_16": (_torchvision("vit_b_16"), "heads.head"),
}


def run_one(name: str) -> dict[str, Any]:
    """Measures one model in this process."""
    from nncompress import preflight, prune, speedup

    torch.manual_seed(0)
    build, head = MODELS[name]
    model = build().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    config = [
        {"sparsity_per_layer": 0.5, "op_types": ["Conv2d", "Linear"]},
        {"exclude": True, "op_names": [head]},
    ]
    times: dict[str, float] = {}
    start = time.perf_counter()
    report = preflight(model, config, x)
    times["preflight_s"] = time.perf_counter() - start
    start = time.perf_counter()
    result = prune(model, config, pruner="l1norm", example_inputs=x)
    times["prune_s"] = time.perf_counter() - start
    start = time.perf_counter()
    shrunk = speedup(model, result.masks, x)
    times["masks_to_verified_s"] = time.perf_counter() - start
    verification = shrunk.verification
    return {
        "model": name,
        "params_before": shrunk.params_before,
        "params_after": shrunk.params_after,
        **{k: round(v, 1) for k, v in times.items()},
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "verified": bool(verification is not None and verification.passed),
        "preflight_will_shrink": report.will_shrink,
        "blocked_by": list(shrunk.blocked_by[:3]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--limit-s", type=float, default=300.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child)))
        return
    for name in args.only:
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", name],
                capture_output=True, text=True, timeout=args.limit_s, check=False,
            )  # fmt: skip
            lines = done.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "model": name, "error": (done.stderr.strip().splitlines() or ["?"])[-1]
            }  # fmt: skip
        except subprocess.TimeoutExpired:
            row = {"model": name, "error": f"timeout after {args.limit_s:g} s"}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
