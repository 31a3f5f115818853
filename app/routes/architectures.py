"""/v1/architectures: the architectures known by name (what uploaded weights can be loaded onto)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from nncompress.models import get, names

router = APIRouter(prefix="/v1/architectures", tags=["architectures"])


class ArchitectureOut(BaseModel):
    name: str = Field(examples=["mnist_net"])
    description: str
    input_shape: list[int] = Field(description="one example input, batch dimension included")
    input_dtype: str = Field(description="float32 for images, int64 for token ids")
    num_classes: int | None


class ArchitecturePage(BaseModel):
    items: list[ArchitectureOut]


@router.get("", response_model=ArchitecturePage)
def list_architectures() -> ArchitecturePage:
    """Registry architectures: upload safetensors or weights-only state_dict weights for one of these."""
    items = []
    for name in names():
        arch = get(name)
        items.append(
            ArchitectureOut(
                name=arch.name,
                description=arch.description,
                input_shape=list(arch.input_shape),
                input_dtype=str(arch.input_dtype).removeprefix("torch."),
                num_classes=arch.num_classes,
            )
        )
    return ArchitecturePage(items=items)
