"""Engine coverage on third-party models: the NNI-style API on torchvision, timm and transformers families.

For each family (random weights, nothing downloaded): ``L1NormPruner(model, config_list)`` → ``compress()``
→ ``unwrap_model()`` → ``ModelSpeedup(model, x, masks).speedup_model()``, 50% of Conv2d/Linear/Conv1D/LSTM/GRU
and the output layer excluded — the method the engine-coverage issue measured with. Reports params before
→ after, seconds from masks to a verified model, the largest difference from the masked model (relative
to its output scale), Torch-Pruning's own 50% magnitude pruning time on the same model in the same run, or
the error (first line) when a family fails. Ours and Torch-Pruning's run in separate processes, each under
a time limit, so a graph that never finishes shows as a timeout instead of stopping the table.

Usage:
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/library_families.py [--only NAME ...] [--limit-s 300]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _tv(name: str, **kw: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kw)

    return build


def _frozen_resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(num_classes=10, norm_layer=torchvision.ops.FrozenBatchNorm2d)


def _tv_convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    settings = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
    return ConvNeXt(settings, num_classes=10)


def _timm(name: str, **kw: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, **kw)

    return build


def _hf(config: str, cls: str, **kw: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        cfg = getattr(transformers, config)(**kw)
        model = getattr(transformers, cls)._from_config(cfg, attn_implementation="eager")
        from nncompress.io.hf_dir import first_output

        model.register_forward_hook(first_output)
        return model

    return build


def _gru() -> nn.Module:
    class GruClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            self.rnn = nn.GRU(32, 32, batch_first=True)
            self.fc = nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _, h = self.rnn(self.emb(x))
            return self.fc(h[-1])

    return GruClassifier()


def _bilstm() -> nn.Module:
    class BiLstm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(16, 32)
            self.rnn = nn.LSTM(32, 32, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(self.proj(x))
            return self.fc(out[:, -1])

    return BiLstm()


OP_TYPES = ["Conv2d", "Linear", "Conv1D", "LSTM", "GRU"]
IMG = (1, 3, 64, 64)
TOKENS = ("ids", 1, 16, 100)
_BERT = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 128, "max_position_embeddings": 32, "num_labels": 3}  # fmt: skip

FAMILIES: dict[str, tuple[Callable[[], nn.Module], Any]] = {
    "tv resnet18": (_tv("resnet18", num_classes=10), IMG),
    "tv resnet18 FrozenBN": (_frozen_resnet18, IMG),
    "tv mobilenet_v3_small": (_tv("mobilenet_v3_small", num_classes=10), IMG),
    "tv efficientnet_b0": (_tv("efficientnet_b0", num_classes=10), IMG),
    "tv shufflenet_v2_x0_5": (_tv("shufflenet_v2_x0_5", num_classes=10), IMG),
    "tv regnet_x_400mf": (_tv("regnet_x_400mf", num_classes=10), IMG),
    "tv densenet121": (_tv("densenet121", num_classes=10), IMG),
    "tv convnext (small config)": (_tv_convnext, IMG),
    "tv swin_t": (_tv("swin_t", num_classes=10), (1, 3, 224, 224)),
    "timm resnetv2_50 (GroupNorm)": (_timm("resnetv2_50", num_classes=10), IMG),
    "timm convnext_atto": (_timm("convnext_atto", num_classes=10), IMG),
    "timm vit_tiny (32 px, depth 2)": (
        _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10), (1, 3, 32, 32)),
    "timm mobilevit_xxs": (_timm("mobilevit_xxs", num_classes=10), IMG),
    "timm ghostnet_100": (_timm("ghostnet_100", num_classes=10), IMG),
    "hf BERT": (_hf("BertConfig", "BertForSequenceClassification", **_BERT), TOKENS),
    "hf DistilBERT": (_hf("DistilBertConfig", "DistilBertForSequenceClassification", vocab_size=100, dim=64,
                          n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=32), TOKENS),
    "hf ViT": (_hf("ViTConfig", "ViTForImageClassification", image_size=32, patch_size=8, hidden_size=64,
                   num_hidden_layers=2, num_attention_heads=4, intermediate_size=128), (1, 3, 32, 32)),
    "hf GPT-2": (_hf("GPT2Config", "GPT2ForSequenceClassification", vocab_size=100, n_embd=64, n_layer=2,
                     n_head=4, n_positions=32, num_labels=3, pad_token_id=0), TOKENS),
    "hf Llama": (_hf("LlamaConfig", "LlamaForCausalLM", vocab_size=100, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4), TOKENS),
    "GRU text classifier": (_gru, TOKENS),
    "Linear → bidirectional LSTM": (_bilstm, (1, 12, 16)),
}  # fmt: skip


def _input(spec: Any) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    if spec[0] == "ids":
        return torch.randint(0, spec[3], (spec[1], spec[2]), generator=gen)
    return torch.randn(spec, generator=gen)


def _output(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out[0]


def _head(model: nn.Module, out: torch.Tensor) -> str:
    """The layer producing the output: the last Linear/Conv whose width is the output's."""
    width = out.shape[-1] if out.dim() != 4 else out.shape[1]
    head = ""
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.Conv2d)) or type(module).__name__ == "Conv1D":
            size = w.shape[1] if type(module).__name__ == "Conv1D" else w.shape[0]
            if size == width:
                head = name
    return head


def _torch_pruning_s(model: nn.Module, x: torch.Tensor, head: str) -> str:
    import torch_pruning as tp

    work = copy.deepcopy(model)
    try:
        start = time.perf_counter()
        pruner = tp.pruner.MagnitudePruner(
            work, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
            ignored_layers=[work.get_submodule(head)] if head else [],
        )  # fmt: skip
        pruner.step()
        elapsed = time.perf_counter() - start
    except Exception as exc:
        return f"fails ({type(exc).__name__})"
    try:
        with torch.inference_mode():
            work(x)
    except Exception as exc:
        return f"{elapsed:.2f}, result crashes ({type(exc).__name__})"
    return f"{elapsed:.2f}"


def torch_pruning(name: str) -> str:
    """Torch-Pruning's time on the family, in a process of its own (its graph may not finish)."""
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    build, spec = FAMILIES[name]
    model = build().eval()
    x = _input(spec)
    with torch.no_grad():
        out = _output(model(x))
    return _torch_pruning_s(model, x, _head(model, out))


def _run(args: list[str], limit_s: float) -> str | None:
    try:
        done = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, timeout=limit_s
        )
    except subprocess.TimeoutExpired:
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else "ERR " + done.stderr.strip()[-200:]


def one(name: str) -> dict[str, Any]:
    """Runs one family in this process; returns its row."""
    from nncompress import L1NormPruner, ModelSpeedup

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    build, spec = FAMILIES[name]
    model = build().eval()
    x = _input(spec)
    with torch.no_grad():
        out = _output(model(x))
    head = _head(model, out)
    before = sum(p.numel() for p in model.parameters())
    config: list[dict[str, Any]] = [{"sparsity_per_layer": 0.5, "op_types": OP_TYPES}]
    if head:
        config.append({"exclude": True, "op_names": [head]})
    row: dict[str, Any] = {"family": name, "params_before": before}
    try:
        pruner = L1NormPruner(model, config, dummy_input=x)
        _, masks = pruner.compress()
        with torch.no_grad():
            masked = _output(model(x)).clone()
        pruner.unwrap_model()
        start = time.perf_counter()
        small = ModelSpeedup(model, x, masks).speedup_model()
        row["masks_to_verified_s"] = round(time.perf_counter() - start, 3)
        with torch.no_grad():
            got = _output(small(x))
        row["params_after"] = sum(p.numel() for p in small.parameters())
        row["max_rel_diff"] = float((got - masked).abs().max() / masked.abs().max().clamp_min(1e-12))
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", help="family names (default: all)")
    parser.add_argument("--limit-s", type=float, default=300, help="time limit per family")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--tp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    if args.tp:
        print(torch_pruning(args.tp))
        return
    header = "| family | params before → after | fewer | masks→verified s | max rel diff | Torch-Pruning s |"
    print(header + " notes |")
    print("|---|---|---|---|---|---|---|")
    for name in args.only or list(FAMILIES):
        line = _run(["--one", name], args.limit_s)
        if line is None:
            row: dict[str, Any] = {"family": name, "error": f"did not finish in {args.limit_s:g} s"}
        elif line.startswith("ERR "):
            row = {"family": name, "error": line[4:]}
        else:
            row = json.loads(line)
        tp = _run(["--tp", name], args.limit_s)
        row["torch_pruning_s"] = f"did not finish in {args.limit_s:g} s" if tp is None else tp
        if "params_after" in row:
            fewer = 1 - row["params_after"] / row["params_before"]
            print(
                f"| {name} | {row['params_before']:,} → {row['params_after']:,} | {fewer:.0%} "
                f"| {row['masks_to_verified_s']:.2f} | {row['max_rel_diff']:.1e} "
                f"| {row['torch_pruning_s']} | |",
                flush=True,
            )
        else:
            before = f"{row['params_before']:,}" if "params_before" in row else "?"
            print(f"| {name} | {before} → – | – | – | – | {row.get('torch_pruning_s', '–')} "
                  f"| {row['error']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
