"""Share of a compression job's wall time spent measuring latency (issue 10), per stage.

Runs the pipeline (``nncompress.pipeline.run_job``) on a model at the job defaults (L1-norm, half
of every conv's channels, speedup, verification, ONNX export, latency at batch 1 and 64) and prints
each stage's seconds, the ``evaluating`` stage's share of the job, the latency budget the job used
(and where it came from), and the latency figures with their spread as the job's result reports
them.

Usage:
    .venv/bin/python benchmarks/job_overhead.py [--arch torchvision/resnet50] [--threads 2]
        [--option key=value ...]   # further JobSpec keys, e.g. latency_budget_s=8 (the old default)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nncompress.models import get
from nncompress.pipeline import JobSpec, run_job


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="torchvision/resnet50")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--option", action="append", default=[], help="a JobSpec key=value (JSON value)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = get(args.arch)
    torch.manual_seed(0)
    model = arch.build().eval()  # random weights: timings do not depend on them
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    spec = JobSpec.from_dict(
        {
            "pruner": "l1norm",
            "config_list": [{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}],
            "input_shape": list(arch.input_shape),
            **options,
        }
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = run_job(spec, model=model, architecture=args.arch, out_dir=out)
        wall = time.perf_counter() - start
    timings = result.timings
    print(f"# {args.arch}: job wall time {wall:.1f} s, torch threads {torch.get_num_threads()}\n")
    print("| stage | seconds | share |\n|---|---|---|")
    for stage, seconds in timings.items():
        print(f"| {stage} | {seconds:.2f} | {seconds / wall:.1%} |")
    print()
    print(f"latency budget: {json.dumps(result.latency_budget.to_dict() if result.latency_budget else None)}")
    for which, metrics in (("before", result.metrics_before), ("after", result.metrics_after)):
        for s in metrics.latency:
            print(f"latency {which} batch {s.batch_size}: {json.dumps(s.__dict__)}")
    for note in result.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
