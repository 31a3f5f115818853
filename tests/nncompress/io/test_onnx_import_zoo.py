"""load_onnx on what torch.onnx.export really writes, for library CNNs, segmentation heads and transformers.

Each case: a library model with random weights → torch.onnx.export (TorchScript exporter with a dynamic
batch at opset 17; the dynamo exporter at opset 18 with ``dynamic_shapes``) → load_onnx (which checks
itself against onnxruntime) → the same outputs as torch, and every Conv2d/Linear of the PyTorch model
present under its module path in the imported one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from nncompress.io.onnx_import import load_onnx

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

IMAGE = (2, 3, 32, 32)
SEG_IMAGE = (2, 3, 64, 64)
TOKENS = (2, 16)


class Output(nn.Module):
    """Picks one output of a model returning a dict (segmentation ``out``, transformers' outputs)."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.m = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)[self.key]


def _tv(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision.models, name)(weights=None, num_classes=10)


def _seg(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        fn = getattr(torchvision.models.segmentation, name)
        return Output(fn(weights=None, weights_backbone=None, num_classes=3), "out")

    return build


def _bert(head: bool) -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    if head:
        return Output(transformers.BertForSequenceClassification(config), "logits")
    return Output(transformers.BertModel(config), "last_hidden_state")


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return Output(transformers.GPT2Model(config), "last_hidden_state")


def _hf_vit() -> nn.Module:
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=5,
    )  # fmt: skip
    return Output(transformers.ViTForImageClassification(config), "logits")


def _timm(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, **kwargs)


# name → (builder, input shape, layers the export cannot contain: unused by the exported output)
ZOO: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], set[str]]] = {
    "resnet18": (_tv("resnet18"), IMAGE, set()),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small"), IMAGE, set()),
    "shufflenet_v2": (_tv("shufflenet_v2_x0_5"), IMAGE, set()),
    "efficientnet_b0": (_tv("efficientnet_b0"), IMAGE, set()),
    "regnet": (_tv("regnet_x_400mf"), IMAGE, set()),
    "convnext_atto": (_timm("convnext_atto", num_classes=10), IMAGE, set()),
    "lraspp": (_seg("lraspp_mobilenet_v3_large"), SEG_IMAGE, set()),
    "deeplabv3": (_seg("deeplabv3_mobilenet_v3_large"), SEG_IMAGE, set()),
    "bert": (lambda: _bert(head=False), TOKENS, {"m.pooler.dense"}),
    "bert_cls": (lambda: _bert(head=True), TOKENS, set()),
    "gpt2": (_gpt2, TOKENS, set()),
    "hf_vit": (_hf_vit, IMAGE, set()),
    "timm_vit": (
        _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5),
        IMAGE,
        set(),
    ),
    "mobilevit_xxs": (_timm("mobilevit_xxs", num_classes=5), SEG_IMAGE, set()),
}
SLOW = {"efficientnet_b0", "regnet", "deeplabv3", "mobilevit_xxs"}
# The dynamo exporter is slow (5-25 s a model here): two run by default, the rest are marked slow.
DYNAMO_FAST = {"resnet18", "bert"}


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    builder, shape, _ = ZOO[name]
    model = builder().eval()
    x = torch.randint(0, 100, shape) if shape == TOKENS else torch.randn(shape)
    return model, x


def export(model: nn.Module, x: torch.Tensor, path: Path, *, dynamo: bool) -> Path:
    """Exports like the torch.onnx docs show, with a dynamic batch dimension."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            # The optimizer drops the name scopes of the MatMuls it rewrites (see naming.py), so
            # the module paths of a ViT's linears survive only with optimize=False.
            torch.onnx.export(
                model, (x,), str(path), dynamo=True, opset_version=18, external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},), optimize=False,
            )  # fmt: skip
        else:
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )  # fmt: skip
    return path


def _params(exporter: str) -> list[object]:
    cases = []
    for name in ZOO:
        slow = name in SLOW or (exporter == "dynamo" and name not in DYNAMO_FAST)
        marks = [pytest.mark.slow] if slow else []
        cases.append(pytest.param(name, id=f"{name}-{exporter}", marks=marks))
    return cases


def _check(name: str, tmp_path: Path, *, dynamo: bool) -> None:
    model, x = _build(name)
    path = export(model, x, tmp_path / f"{name}.onnx", dynamo=dynamo)
    started = time.perf_counter()
    gm = load_onnx(path)
    seconds = time.perf_counter() - started
    check = gm.meta["onnx"]["check"]
    error = check["max_rel_error"]
    print(f"{name} dynamo={dynamo}: import {seconds:.2f} s, max rel error vs onnxruntime {error:.2g}")
    assert check["max_rel_error"] <= 1e-4
    for batch in (x, torch.cat([x, x, x])):  # the batch stays dynamic
        with torch.inference_mode():
            expected, got = model(batch), gm(batch)
        scale = max(1.0, expected.abs().max().item())
        assert (got - expected).abs().max().item() / scale <= 1e-4
    layers = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    imported = dict(gm.named_modules())
    missing = sorted(layers - ZOO[name][2] - set(imported))
    assert not missing, f"layers without their PyTorch path: {missing[:8]}"
    for layer in layers - ZOO[name][2]:
        assert type(imported[layer]) is type(dict(model.named_modules())[layer]), layer


@pytest.mark.parametrize("name", _params("torchscript"))
def test_torchscript_export_imports(name: str, tmp_path: Path) -> None:
    _check(name, tmp_path, dynamo=False)


@pytest.mark.parametrize("name", _params("dynamo"))
def test_dynamo_export_imports(name: str, tmp_path: Path) -> None:
    _check(name, tmp_path, dynamo=True)
