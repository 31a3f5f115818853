"""Model files as users produce them, built small and in memory for the intake tests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import nn


class TinyCnn(nn.Module):
    """A 3×16×16 classifier small enough to export, import and prune in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return TinyCnn().eval()


def onnx_bytes(model: nn.Module | None = None, shape: tuple[int, ...] = (1, 3, 16, 16)) -> bytes:
    """The legacy (TorchScript) exporter's ONNX, weights inside the file."""
    buffer = io.BytesIO()
    torch.onnx.export(model or tiny_cnn(), (torch.randn(shape),), buffer, dynamo=False, opset_version=17)
    return buffer.getvalue()


def onnx_with_external_data(folder: Path) -> tuple[Path, Path]:
    """model.onnx whose initializers live in model.onnx.data (as large exports are written)."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes())
    path = folder / "model.onnx"
    onnx.save_model(
        proto, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    return path, folder / "model.onnx.data"


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def onnx_with_op(op_type: str) -> bytes:
    """A one-node graph using ``op_type`` (e.g. an op the importer does not convert)."""
    from onnx import TensorProto, helper

    node = helper.make_node(op_type, ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def pt2_bytes() -> bytes:
    buffer = io.BytesIO()
    program = torch.export.export(tiny_cnn(), (torch.randn(1, 3, 16, 16),))
    torch.export.save(program, buffer)
    return buffer.getvalue()


class TinyTokenModel(nn.Module):
    """Token ids → class logits: an embedding, a linear layer, mean over the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(ids)).mean(1)


def token_onnx_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    ids = torch.zeros(1, 8, dtype=torch.long)
    torch.onnx.export(TinyTokenModel().eval(), (ids,), buffer, dynamo=False, opset_version=17)
    return buffer.getvalue()


# Half of every BERT block's feed-forward width, by the transformers layer names.
BERT_FFN_HALF = [{"sparse_ratio": 0.5, "op_names_re": [r"bert\.encoder\.layer\.\d+\.intermediate\.dense"]}]


def tiny_bert(vocab_size: int = 100) -> nn.Module:
    """A random 2-layer BERT classifier (hidden 32, 2 heads, FFN 64, 3 labels); seed before calling."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2() -> nn.Module:
    """A random 2-layer GPT-2 language model (embedding 32, 2 heads, vocab 100); seed before calling."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config)


def tiny_vit() -> nn.Module:
    """A random 2-layer ViT classifier of 32×32 images in 8×8 patches, 5 labels; seed before calling."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
    )
    return ViTForImageClassification(config)


def tiny_bert_folder(folder: Path) -> Path:
    """save_pretrained of :func:`tiny_bert` with a vocabulary of 128."""
    torch.manual_seed(0)
    tiny_bert(vocab_size=128).save_pretrained(folder)
    return folder


def timm_resnet18_folder(folder: Path, num_classes: int) -> nn.Module:
    """A random timm resnet18 written as ``save_for_hf`` writes it (what push_to_hub uploads), offline.

    Returns:
        The model that was saved, in eval mode.
    """
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes).eval()
    save_for_hf(model, str(folder), safe_serialization=True)
    return model


def zip_folder(folder: Path, prefix: str = "model/") -> bytes:
    """A zip of ``folder``'s files under ``prefix`` (a folder zipped from its parent, as users upload it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{prefix}{path.name}")
    return buffer.getvalue()


def hf_parts(folder: Path) -> dict[str, tuple[str, bytes]]:
    """The multipart ``files`` of a save_pretrained folder uploaded as its parts: weights and config."""
    return {
        "file": ("model.safetensors", (folder / "model.safetensors").read_bytes()),
        "config": ("config.json", (folder / "config.json").read_bytes()),
    }
