"""Hugging Face model folders (``config.json`` + safetensors), from transformers or timm.

Two steps, kept apart because they run in different processes:

* :func:`describe_hf_dir` is safe in the API process. It reads ``config.json`` as bounded JSON,
  decides the library and the class, refuses anything that could run code from the upload
  (``auto_map`` / remote code, classes outside transformers' Auto mappings, timm arguments that
  name files), reads the safetensors *headers* only, and checks every name and shape against the
  model built on the meta device (no memory, no weights).
* :func:`load_hf_dir` runs in the worker: the same checks, then the model is built with random
  weights (``from_config`` / ``timm.create_model(pretrained=False)``, eager attention so the graph
  is traceable and prunable) and the weights are loaded strictly.

Outputs. A transformers model returns a ``ModelOutput`` (a dict). The engine copes with dicts, but
accuracy, distillation and users expect a tensor, and ``config.return_dict=False`` is not honoured
by every model in transformers 5 (GPT-2's head reads ``.last_hidden_state`` from its inner model).
So a forward hook on the top module replaces the output with its first tensor: the logits of a
task head, ``last_hidden_state`` of a base model. A hook, not a wrapper module, keeps every module
path unchanged: ``op_names: ["bert.encoder.layer.0.intermediate.dense"]`` selects exactly what it
names in the transformers model. The hook survives ``copy.deepcopy`` and speedup.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io.hf_archive import (
    CONFIG,
    DEFAULT_MAX_BYTES,
    INDEX,
    MAX_CONFIG_BYTES,
    MAX_INDEX_BYTES,
    SINGLE,
    HfSource,
    TensorInfo,
    extract_hf_zip,
    is_weight_file,
    open_hf_source,
    read_json,
    read_safetensors_header,
)
from nncompress.io.hf_build import (
    ParsedConfig,
    build_model,
    checkpoint_shapes,
    first_output,
    input_spec,
    load_transformers,
    parse_config,
)
from nncompress.io.intake import check_shapes_fit, load_state_dict_strict

__all__ = ["HfDirSummary", "LoadedHf", "describe_hf_dir", "extract_hf_zip", "first_output", "load_hf_dir"]


@dataclass(frozen=True)
class HfDirSummary:
    """What an uploaded model folder holds, checked without loading any tensor.

    Args:
        library: ``"transformers"`` or ``"timm"``.
        class_name: the transformers class (``"BertForSequenceClassification"``) or timm model name.
        architecture: the string to record, ``"hf/<class>"`` or ``"timm/<model>"``.
        model_type: transformers' ``model_type`` (None for timm).
        input_shape: one example input including a batch of 1: ``(1, 16)`` token ids, ``(1, 3, S, S)``.
        input_dtype: ``torch.long`` for token ids, ``torch.float32`` for images.
        vocab_size: token ids are drawn below this (text models).
        weight_files: the safetensors files, in load order.
        num_tensors: tensors in the files.
        num_params: elements over all tensors in the files.
        file_dtypes: safetensors dtypes seen (``"F32"``, ``"BF16"``…); weights are loaded as float32.
        tied: missing keys filled from the key they are tied to (``lm_head.weight`` → embeddings).
        config: the parsed config.json (for a manifest).
    """

    library: str
    class_name: str
    architecture: str
    model_type: str | None
    input_shape: tuple[int, ...]
    input_dtype: torch.dtype
    vocab_size: int | None
    weight_files: list[str]
    num_tensors: int
    num_params: int
    file_dtypes: list[str]
    tied: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def example_input(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random input the model accepts: token ids below ``vocab_size``, or an image batch."""
        shape = (batch_size, *self.input_shape[1:])
        if self.input_dtype == torch.long:
            return torch.randint(0, int(self.vocab_size or 2), shape, generator=generator)
        return torch.randn(shape, generator=generator)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields for the API and manifests (the config itself is left out)."""
        return {
            "library": self.library,
            "class_name": self.class_name,
            "architecture": self.architecture,
            "model_type": self.model_type,
            "input_shape": list(self.input_shape),
            "input_dtype": str(self.input_dtype).removeprefix("torch."),
            "vocab_size": self.vocab_size,
            "weight_files": list(self.weight_files),
            "num_tensors": self.num_tensors,
            "num_params": self.num_params,
            "file_dtypes": list(self.file_dtypes),
            "tied": dict(self.tied),
        }


@dataclass
class LoadedHf:
    """A loaded model folder: the module (eval mode, weights loaded) and its summary."""

    model: nn.Module
    summary: HfDirSummary

    def example_input(self, batch_size: int = 1, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.summary.example_input(batch_size, generator=generator)


def describe_hf_dir(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> HfDirSummary:
    """Checks a model folder (or a zip of one) without loading any tensor; safe in the API process.

    Args:
        path: the directory, or a zip whose files sit at its root or under one folder.
        max_bytes: limit on the total size of the model files.

    Returns:
        An :class:`HfDirSummary`.

    Raises:
        ModelLoadError: unsafe or unexpected files, a config that asks for remote code or names a
            class outside transformers' Auto mappings, an unknown timm model, or weights that do
            not fit the model (``context``: ``missing``, ``unexpected``, ``shape_mismatches``).
    """
    with open_hf_source(path, max_bytes=max_bytes) as source:
        summary, _ = _describe(source)
    return summary


def load_hf_dir(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedHf:
    """Builds the model a folder (or zip) describes and loads its safetensors weights strictly.

    Run it in a worker: it builds the model for real. A zip is extracted into a temporary folder
    that is deleted before returning (the weights are copied into the model).

    Returns:
        :class:`LoadedHf`; its model is in eval mode, float32, with eager attention, and returns
        one tensor (see the module docstring).

    Raises:
        ModelLoadError: as :func:`describe_hf_dir`, or a file that cannot be read.
    """
    p = Path(path)
    if not p.is_dir():
        with tempfile.TemporaryDirectory(prefix="nncompress-hf-") as tmp:
            return load_hf_dir(
                extract_hf_zip(p, Path(tmp) / "model", max_bytes=max_bytes), max_bytes=max_bytes
            )
    with open_hf_source(p, max_bytes=max_bytes) as source:
        summary, parsed = _describe(source)
    if parsed.library == "transformers":
        return LoadedHf(load_transformers(parsed, str(p)), summary)
    model = build_model(parsed)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for name in summary.weight_files:
        try:
            state.update(load_file(str(p / name)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{name} cannot be read: {exc}", file=name) from exc
    load_state_dict_strict(model, state, architecture=summary.architecture)
    return LoadedHf(model.eval(), summary)


# --- internals -----------------------------------------------------------------------------------


def _describe(source: HfSource) -> tuple[HfDirSummary, ParsedConfig]:
    """Parses the config, builds the model on the meta device, checks the weights' headers against it."""
    raw = read_json(source, CONFIG, MAX_CONFIG_BYTES)
    parsed = parse_config(raw)
    tensors = _headers(source)
    model = build_model(parsed, device="meta")
    expected, tied_all = checkpoint_shapes(parsed, model)
    ignored = _ignored_keys(model, tensors)
    present = {k: v for k, v in tensors.items() if k not in ignored}
    # A tied key is absent from save_pretrained's output (it is the same tensor as its source).
    tied = {t: src for t, src in tied_all.items() if t not in present and src in present}
    check_shapes_fit(
        {k: v.shape for k, v in present.items()},
        expected,
        message=f"the weights do not fit {parsed.architecture} as config.json describes it",
        architecture=parsed.architecture,
        tied=tied,
    )
    shape, dtype, vocab = input_spec(parsed, model)
    numel = 0
    for info in present.values():
        n = 1
        for d in info.shape:
            n *= d
        numel += n
    summary = HfDirSummary(
        library=parsed.library,
        class_name=parsed.class_name,
        architecture=parsed.architecture,
        model_type=parsed.model_type,
        input_shape=shape,
        input_dtype=dtype,
        vocab_size=vocab,
        weight_files=sorted({info.file for info in tensors.values()}),
        num_tensors=len(present),
        num_params=numel,
        file_dtypes=sorted({info.dtype for info in present.values()}),
        tied=tied,
        config=raw,
    )
    return summary, parsed


def _headers(source: HfSource) -> dict[str, TensorInfo]:
    """Every tensor of the folder's weights, from the index (shards) or model.safetensors."""
    if INDEX in source.files:
        index = read_json(source, INDEX, MAX_INDEX_BYTES)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ModelLoadError(f"{INDEX} has no weight_map", file=INDEX)
        files = set(weight_map.values())
        bad = sorted(str(f) for f in files if not isinstance(f, str) or not is_weight_file(f))
        if bad:
            raise ModelLoadError(f"{INDEX} names unexpected files {bad[:3]}", file=INDEX, files=bad)
        absent = sorted(f for f in files if f not in source.files)
        if absent:
            raise ModelLoadError(
                f"{INDEX} names shards that are missing: {absent[:3]}", file=INDEX, missing_files=absent
            )
    elif SINGLE in source.files:
        files, weight_map = {SINGLE}, None
    else:
        raise ModelLoadError(
            "the model folder has no model.safetensors (nor shards with an index); save it with "
            "save_pretrained(dir, safe_serialization=True)",
            files=sorted(source.files),
        )
    tensors: dict[str, TensorInfo] = {}
    for name in sorted(files):
        for key, info in read_safetensors_header(source, name).items():
            if key in tensors:
                raise ModelLoadError(f"tensor {key!r} is stored twice ({tensors[key].file}, {name})", key=key)
            tensors[key] = info
    if weight_map is not None:
        wrong = sorted(k for k, f in weight_map.items() if k in tensors and tensors[k].file != f)
        if wrong:
            raise ModelLoadError(f"{INDEX} places {wrong[0]!r} in the wrong shard", key=wrong[0])
    return tensors


def _ignored_keys(model: nn.Module, keys: Mapping[str, object]) -> set[str]:
    """Keys transformers itself drops when loading (old checkpoints' ``position_ids`` buffers)."""
    patterns = getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []
    expected = set(model.state_dict())
    return {k for k in keys if k not in expected and any(re.search(p, k) for p in patterns)}
