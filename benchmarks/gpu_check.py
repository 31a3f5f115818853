"""GPU check of the job pipeline (run by hand on a CUDA machine; figures go into the issue note).

Runs what a CUDA worker's job process runs — ``nncompress.pipeline.run_job`` — on the seed Net with
the shipped MNIST subset: L1 80% + speedup, 3 epochs of fine-tuning with distillation (bf16 autocast,
data on the device), static int8 (onnxruntime, CPU). Then times ``nncompress.finetune`` against a plain
PyTorch loop on the same data, batch size and precision.

On a machine without fastapi/celery/sqlalchemy this needs only the engine (plus torch-pruning):
    PYTHONPATH=. python benchmarks/gpu_check.py
"""

from __future__ import annotations

import json
import tempfile
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from nncompress.data import load_mnist_subset, mnist_net_weights_path
from nncompress.datasets import from_arrays
from nncompress.finetune import FinetuneSpec, finetune
from nncompress.models import get
from nncompress.pipeline import JobSpec, run_job

CONFIG = [
    {"sparsity_per_layer": 0.8, "op_types": ["Linear", "Conv2d"]},
    {"exclude": True, "op_names": ["fc2"]},
]


def trained_net() -> nn.Module:
    model = get("mnist_net").build()
    model.load_state_dict(load_file(str(mnist_net_weights_path())))
    return model.eval()


def pipeline_job() -> dict[str, object]:
    spec = JobSpec.from_dict(
        {
            "pruner": "l1norm",
            "config_list": CONFIG,
            "dataset": "mnist_subset",
            "val_fraction": 0.3,
            "device": "cuda",
            "latency_runs": 5,
            "latency_batch_sizes": [1, 64],
            "finetune": {
                "epochs": 3,
                "lr": 0.005,
                "batch_size": 64,
                "device": "cuda",
                "distillation": {"weight": 0.5, "temperature": 4},
            },
            "quantize": {"mode": "static", "calibration_batches": 4},
        }
    )
    start = time.perf_counter()
    result = run_job(spec, model=trained_net(), architecture="mnist_net", out_dir=tempfile.mkdtemp())
    metrics = result.to_dict()["metrics"]
    ft = metrics["finetune"]
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "precision": ft["precision"],
        "samples_per_second": ft["samples_per_second"],
        "top1": {k: ft[k]["top1"] for k in ("original", "pruned", "finetuned")},
        "int8_top1": metrics["quantized"]["int8"]["top1"],
        "latency_after": metrics["after"]["latency"],
    }


def plain_loop_samples_per_second(x: torch.Tensor, y: torch.Tensor, epochs: int = 3) -> float:
    xg, yg = x.cuda(), y.cuda()
    model = trained_net().cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.cuda.synchronize()
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        perm = torch.randperm(len(yg), device="cuda")
        for s in range(0, len(yg), 64):
            idx = perm[s : s + 64]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xg[idx]).float(), yg[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
    print("pipeline job on cuda:", json.dumps(pipeline_job()), flush=True)
    x, y = load_mnist_subset()
    data = from_arrays(x.numpy(), y.numpy(), num_classes=10)
    for _ in range(2):  # the second round is the warm one
        res = finetune(
            trained_net(), data, data, FinetuneSpec(epochs=3, batch_size=64, lr=0.01, device="cuda")
        )
        print(f"nncompress.finetune {res.samples_per_second:.0f} samples/s ({res.precision})", flush=True)
        print(f"plain PyTorch loop  {plain_loop_samples_per_second(x, y):.0f} samples/s", flush=True)


if __name__ == "__main__":
    main()
