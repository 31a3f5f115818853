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


class LibraryFamilyOut(BaseModel):
    library: str = Field(examples=["timm"])
    prefix: str = Field(examples=["timm/"], description="how its model names are spelled")
    installed: bool
    version: str | None
    count: int | None = Field(description="models it offers by name; null when not nameable or missing")
    examples: list[str]
    note: str


class ArchitecturePage(BaseModel):
    items: list[ArchitectureOut]
    libraries: list[LibraryFamilyOut] = Field(
        default_factory=list,
        description="installed model libraries: weights may name torchvision/<model> or timm/<model>; "
        "Hugging Face models are uploaded as their save_pretrained folder",
    )


@router.get("", response_model=ArchitecturePage)
def list_architectures() -> ArchitecturePage:
    """Registry architectures and library families: upload safetensors or state_dict weights for one."""
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
    return ArchitecturePage(items=items, libraries=_library_families())


def _library_families() -> list[LibraryFamilyOut]:
    try:
        from nncompress.models.libraries import library_families
    except ImportError:  # an engine without the library adapters
        return []
    return [LibraryFamilyOut(**family.to_dict()) for family in library_families().values()]
