"""torchvision and timm architectures by name: lazy resolution, heads fitted to the weights, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io import load_model
from nncompress.models import get, libraries, names
from nncompress.models.libraries import (
    LibraryUnavailableError,
    build_for_state,
    library_families,
    library_model_names,
    state_overrides,
)

pytest.importorskip("torchvision")
pytest.importorskip("timm")


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.inference_mode():
        return torch.allclose(a(x), b(x), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "shape", "classes"),
    [
        ("torchvision/resnet18", (1, 3, 224, 224), 1000),
        ("torchvision/mobilenet_v3_small", (1, 3, 224, 224), 1000),
        ("torchvision/inception_v3", (1, 3, 299, 299), 1000),
        ("timm/resnet18", (1, 3, 224, 224), 1000),
        ("timm/resnet18.a1_in1k", (1, 3, 224, 224), 1000),
    ],
)
def test_library_names_resolve_with_their_input(name: str, shape: tuple[int, ...], classes: int) -> None:
    arch = get(name)
    assert arch.name == name and arch.input_shape == shape and arch.num_classes == classes
    assert arch.example_input(2).shape == (2, *shape[1:])


def test_built_from_the_library_with_random_weights() -> None:
    import timm
    import torchvision

    torch.manual_seed(0)
    tv = get("torchvision/resnet18").build()
    assert isinstance(tv, torchvision.models.ResNet) and tv.fc.out_features == 1000
    tm = get("timm/resnet18").build(num_classes=7)
    assert isinstance(tm, timm.models.ResNet) and tm.get_classifier().out_features == 7


def test_names_lists_only_builtins_and_families_list_the_libraries() -> None:
    assert "mnist_net" in names() and not any("/" in n for n in names())
    families = library_families()
    assert (
        families["torchvision"].installed
        and families["torchvision"].count
        and families["torchvision"].count > 50
    )
    assert families["timm"].version and "timm/resnet18" in families["timm"].examples
    assert families["transformers"].prefix == "hf/"
    assert families["timm"].to_dict()["count"] == len(library_model_names("timm"))
    assert "timm/resnet50" in library_model_names("timm")


@pytest.mark.parametrize(
    ("name", "close"),
    [("torchvision/resnet5", "torchvision/resnet50"), ("timm/resnt18", "timm/resnet18")],
)
def test_unknown_model_lists_close_matches(name: str, close: str) -> None:
    with pytest.raises(KeyError, match=close):
        get(name)


def test_hf_prefix_points_to_the_folder_upload() -> None:
    with pytest.raises(KeyError, match=r"config\.json"):
        get("hf/BertForSequenceClassification")


def test_missing_library_says_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = libraries.importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *args)

    monkeypatch.setattr(libraries.importlib, "import_module", fake)
    libraries._resolve_cached.cache_clear()
    try:
        with pytest.raises(LibraryUnavailableError, match="not installed on this deployment"):
            get("timm/resnet18")
    finally:
        libraries._resolve_cached.cache_clear()


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("torchvision/resnet18", "fc"),
        ("torchvision/mobilenet_v3_small", "classifier.3"),
        ("timm/resnet18", "fc"),
    ],
)
def test_custom_head_weights_load_strictly(name: str, head: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = get(name).build(num_classes=10).eval()
    save_file(dict(original.state_dict()), str(tmp_path / "w.safetensors"))
    shapes = {k: list(v.shape) for k, v in original.state_dict().items()}
    assert state_overrides(name, shapes) == {"num_classes": 10}
    assert dict(build_for_state(name, shapes).named_modules())[head].out_features == 10
    loaded = load_model(tmp_path / "w.safetensors", architecture=name)
    assert _same(loaded, original, torch.randn(2, 3, 64, 64))
    # The same as a weights-only torch.save state_dict.
    torch.save(original.state_dict(), tmp_path / "w.pt")
    assert _same(load_model(tmp_path / "w.pt", architecture=name), original, torch.randn(1, 3, 64, 64))


def test_default_head_needs_no_override() -> None:
    shapes = {k: list(v.shape) for k, v in get("timm/resnet18").build().state_dict().items()}
    assert state_overrides("timm/resnet18", shapes) == {}
    assert state_overrides("mnist_net", {"fc2.weight": [3, 500]}) == {}  # built-ins are left alone


def test_weights_of_another_backbone_still_fail_strictly(tmp_path: Path) -> None:
    # Only the head's output size is inferred; a different body is reported, not patched over.
    torch.manual_seed(0)
    state = get("torchvision/resnet18").build(num_classes=10).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    save_file(dict(state), str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / "w.safetensors", architecture="torchvision/resnet18")
    assert "layer1.0.conv1.weight" in info.value.context["shape_mismatches"]


@pytest.mark.slow  # ~5 s each alone, tracing and verifying a full-width ResNet-18
@pytest.mark.parametrize("name", ["torchvision/resnet18", "timm/resnet18"])
def test_engine_prunes_and_shrinks_a_library_model(name: str) -> None:
    from nncompress.pruners import prune
    from nncompress.speedup import speedup

    torch.manual_seed(0)
    model = get(name).build(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    res = prune(
        model, [{"sparsity_per_layer": 0.5, "op_types": ["Conv2d"]}], pruner="l1norm", example_inputs=x
    )
    result = speedup(model, res.masks, x)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in result.model.parameters())
    assert after < 0.5 * before
    assert result.model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
