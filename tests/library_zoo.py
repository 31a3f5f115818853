"""Models a user really has, built by torchvision, timm and transformers, and exported as their docs say.

Random weights (``weights=None``, ``pretrained=False``, ``from_config``): nothing is downloaded. Sizes are
cut down (narrow widths, few blocks, 64×64 images, 16-token texts) so a job runs in seconds on two CPU
cores; the layer names, op patterns and module classes are the libraries' own.

Each :class:`ZooCase` names its intake route, the files a user would upload for it, and a config_list
written against the *PyTorch* model's layer names.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

# Routes: how the user hands the model over.
ONNX = "onnx"  # torch.onnx.export(..., dynamo=False), the TorchScript exporter
ONNX_DYNAMO = "onnx_dynamo"  # torch.onnx.export(..., dynamo=True)
HF_DIR = "hf_dir"  # transformers save_pretrained / timm save_for_hf directory, zipped
BY_NAME = "by_name"  # architecture "torchvision/..." or "timm/..." + safetensors state_dict
STATE_DICT = "state_dict"  # architecture name + torch.save(model.state_dict())
PICKLE = "pickle"  # torch.save(model), on a deployment that allows pickles


@dataclass(frozen=True)
class ZooCase:
    """One model of the zoo, the route it takes and the config a user would write for it."""

    name: str
    family: str  # cnn | segmentation | transformer | mobile
    route: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    config_list: list[dict[str, Any]]
    input_dtype: torch.dtype = torch.float32
    architecture: str | None = None  # for BY_NAME / STATE_DICT
    vocab_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        shape = (batch, *self.input_shape[1:])
        if self.input_dtype == torch.long:
            return torch.randint(0, self.vocab_size, shape, generator=gen)
        return torch.randn(shape, generator=gen)


def _half(op_types: list[str], exclude: list[str]) -> list[dict[str, Any]]:
    config: list[dict[str, Any]] = [{"sparsity_per_layer": 0.5, "op_types": op_types}]
    if exclude:
        config.append({"exclude": True, "op_names": exclude})
    return config


def _ffn(pattern: str, layers: int = 2) -> list[dict[str, Any]]:
    """Half of the feed-forward width of every block: ``pattern`` has ``{}`` where the block index goes."""
    return [{"sparsity_per_layer": 0.5, "op_names": [pattern.format(i) for i in range(layers)]}]


# ---------------------------------------------------------------- builders
def _tv(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        return torchvision.models.get_model(name, weights=None, **kwargs).eval()

    return build


def _tv_seg(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=4)
        return _SegOut(model).eval()

    return build


class _SegOut(nn.Module):
    """torchvision's segmentation models return ``{"out": …}``; users export the tensor (no dicts in ONNX)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _tv_convnext_small() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    torch.manual_seed(0)
    settings = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, None, 1)]
    return ConvNeXt(settings, num_classes=10).eval()


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, **kwargs).eval()

    return build


def _hf(config_name: str, model_class: str, **config: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, model_class)._from_config(cfg, attn_implementation="eager")
        return model.eval()

    return build


_BERT = {
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
    "num_labels": 3,
}
_GPT2 = {
    "vocab_size": 100,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 32,
    "num_labels": 3,
    "pad_token_id": 0,
}
_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_labels": 5,
}
_LLAMA = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 32}  # fmt: skip
_DISTIL = {
    "vocab_size": 100,
    "dim": 32,
    "n_layers": 2,
    "n_heads": 4,
    "hidden_dim": 64,
    "max_position_embeddings": 32,
    "num_labels": 2,
}


IMG = (1, 3, 64, 64)


def _image_case(
    name: str,
    family: str,
    route: str,
    build: Callable[[], nn.Module],
    exclude: list[str] | None = None,
    *,
    op_types: list[str] | None = None,
    architecture: str | None = None,
) -> ZooCase:
    """A 64×64 image model, half of every ``op_types`` layer (convs unless said) pruned, ``exclude`` kept."""
    config = _half(op_types or ["Conv2d"], exclude or [])
    return ZooCase(name, family, route, build, IMG, config, architecture=architecture)


def _token_case(name: str, route: str, build: Callable[[], nn.Module], ffn_pattern: str) -> ZooCase:
    """A transformer fed 16 token ids of a 100-word vocabulary, half of each block's feed-forward pruned."""
    return ZooCase(
        name, "transformer", route, build, (1, 16), _ffn(ffn_pattern), input_dtype=torch.long, vocab_size=100
    )


_RESNET18 = _tv("resnet18", num_classes=10)

ZOO: list[ZooCase] = [
    # CNN classifiers
    _image_case("tv_resnet18", "cnn", ONNX, _RESNET18, ["fc"], op_types=["Conv2d", "Linear"]),
    ZooCase(
        "tv_resnet18_dynamo",
        "cnn",
        ONNX_DYNAMO,
        _RESNET18,
        IMG,
        # Half of every conv, and a later entry (NNI precedence) naming two layers by their PyTorch paths.
        [
            {"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]},
            {"sparsity_per_layer": 0.25, "op_names": ["layer1.0.conv1", "layer2.0.conv1"]},
        ],
    ),
    _image_case("tv_resnet18_by_name", "cnn", BY_NAME, _RESNET18, architecture="torchvision/resnet18"),
    _image_case("tv_resnet18_state_dict", "cnn", STATE_DICT, _RESNET18, architecture="torchvision/resnet18"),
    _image_case("tv_squeezenet1_1", "cnn", ONNX, _tv("squeezenet1_1", num_classes=10), ["classifier.1"]),
    _image_case(
        "tv_regnet_x_400mf",
        "cnn",
        BY_NAME,
        _tv("regnet_x_400mf", num_classes=10),
        architecture="torchvision/regnet_x_400mf",
    ),
    _image_case("tv_convnext_small", "cnn", ONNX, _tv_convnext_small, ["classifier.2"], op_types=["Linear"]),
    _image_case("timm_resnet18_dir", "cnn", HF_DIR, _timm("resnet18", num_classes=10)),
    _image_case("timm_densenet121", "cnn", ONNX, _timm("densenet121", num_classes=10)),
    # mobile
    _image_case("tv_mobilenet_v3_small", "mobile", ONNX, _tv("mobilenet_v3_small", num_classes=10)),
    _image_case("tv_mobilenet_v2_pickle", "mobile", PICKLE, _tv("mobilenet_v2", num_classes=10)),
    _image_case("tv_efficientnet_b0", "mobile", ONNX, _tv("efficientnet_b0", num_classes=10)),
    _image_case("timm_mobilevit_xxs", "mobile", ONNX, _timm("mobilevit_xxs", num_classes=10)),
    # segmentation
    _image_case(
        "tv_lraspp_mobilenet_v3",
        "segmentation",
        ONNX,
        _tv_seg("lraspp_mobilenet_v3_large"),
        ["model.classifier.low_classifier", "model.classifier.high_classifier"],
    ),
    _image_case(
        "tv_deeplabv3_mobilenet_v3",
        "segmentation",
        ONNX,
        _tv_seg("deeplabv3_mobilenet_v3_large"),
        ["model.classifier.4"],
    ),
    # transformers
    _token_case(
        "hf_bert_dir",
        HF_DIR,
        _hf("BertConfig", "BertForSequenceClassification", **_BERT),
        "bert.encoder.layer.{}.intermediate.dense",
    ),
    _token_case(
        "hf_bert_onnx",
        ONNX,
        _hf("BertConfig", "BertForSequenceClassification", **_BERT),
        "bert.encoder.layer.{}.intermediate.dense",
    ),
    _token_case(
        "hf_gpt2_dir",
        HF_DIR,
        _hf("GPT2Config", "GPT2ForSequenceClassification", **_GPT2),
        "transformer.h.{}.mlp.c_fc",
    ),
    ZooCase(
        "hf_vit_dir",
        "transformer",
        HF_DIR,
        _hf("ViTConfig", "ViTForImageClassification", **_VIT),
        (1, 3, 32, 32),
        _ffn("vit.layers.{}.mlp.fc1"),
    ),
    _token_case(
        "hf_llama_dir",
        HF_DIR,
        _hf("LlamaConfig", "LlamaForCausalLM", **_LLAMA),
        "model.layers.{}.mlp.up_proj",
    ),
    _token_case(
        "hf_distilbert_onnx",
        ONNX,
        _hf("DistilBertConfig", "DistilBertForSequenceClassification", **_DISTIL),
        "distilbert.transformer.layer.{}.ffn.lin1",
    ),
    ZooCase(
        "timm_vit_tiny",
        "transformer",
        ONNX,
        _timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10),
        (1, 3, 32, 32),
        _ffn("blocks.{}.mlp.fc1"),
    ),
]


# ---------------------------------------------------------------- export, as the libraries' docs say
def export_upload(case: ZooCase, model: nn.Module, folder: Path) -> dict[str, Any]:
    """Writes what a user would upload for ``case``; returns the multipart ``files`` and ``data``."""
    folder.mkdir(parents=True, exist_ok=True)
    x = case.example_input()
    if case.route in (ONNX, ONNX_DYNAMO):
        path = folder / "model.onnx"
        if case.route == ONNX:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=True)
        data_files = [p for p in folder.iterdir() if p.name != "model.onnx"]
        if data_files:  # the dynamo exporter keeps the weights in a side file: upload both, zipped
            bundle = folder / "model.zip"
            with zipfile.ZipFile(bundle, "w") as zf:
                for member in [path, *data_files]:
                    zf.write(member, member.name)
            return {"file": bundle, "data": {}}
        return {"file": path, "data": {}}
    if case.route == HF_DIR:
        directory = folder / "dir"
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(directory, safe_serialization=True)
        else:
            from timm.models import _hub

            _hub.save_for_hf(model, str(directory), safe_serialization=True)
        path = folder / "model.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for member in sorted(directory.iterdir()):
                zf.write(member, member.name)
        return {"file": path, "data": {}}
    if case.route == BY_NAME:
        from safetensors.torch import save_file

        path = folder / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return {"file": path, "data": {"architecture": case.architecture}}
    if case.route == STATE_DICT:
        path = folder / "model.pt"
        torch.save(model.state_dict(), path)
        return {"file": path, "data": {"architecture": case.architecture}}
    if case.route == PICKLE:
        path = folder / "model.pt"
        torch.save(model, path)
        return {"file": path, "data": {}}
    raise ValueError(f"unknown route {case.route!r}")


def describe(case: ZooCase) -> str:
    return json.dumps({"name": case.name, "route": case.route, "family": case.family})
