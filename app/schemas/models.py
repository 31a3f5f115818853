"""Bodies of the /v1/models endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelOut(BaseModel):
    """An uploaded model as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    sha256: str
    size_bytes: int
    format: str = Field(
        description="detected from the bytes: safetensors | state_dict | onnx | onnx_zip | hf_dir | pickle"
    )
    architecture: str | None
    filename: str = Field(description="the uploaded file name, for display only")
    summary: dict[str, Any] | None = Field(
        default=None,
        description="what intake read from the file without running it: source, library, class, input "
        "(shape, dtype), layer_count, parameters, opset and ops for ONNX; null for pickles' contents",
        examples=[{"source": "onnx", "input": {"shape": [1, 3, 32, 32], "dtype": "float32"}}],
    )
    created_at: datetime


class PreflightIn(BaseModel):
    """A config to resolve against a model without pruning it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    config_list: list[Any] = Field(examples=[[{"sparse_ratio": 0.5, "op_types": ["Conv2d"]}]])
    pruner: str = Field(default="l1norm", examples=["l1norm"])
    input_shape: list[int] | None = Field(
        default=None, min_length=1, max_length=8, description="defaults to the architecture's input shape"
    )
