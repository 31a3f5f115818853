"""The body of every error answer: an RFC 9457 problem document (rendered by app/problems.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_NAME = "ProblemDetails"


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document: how every error of this API is answered."""

    model_config = ConfigDict(title=SCHEMA_NAME)

    type: str = Field(
        pattern=r"^urn:nncompress:problem:[a-z0-9_]+$",
        description="stable identifier of the kind of problem; clients branch on it",
        examples=["urn:nncompress:problem:not_found"],
    )
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(ge=400, le=599, description="the HTTP status, repeated")
    detail: str = Field(description="what went wrong in this request, for a person")
    instance: str = Field(description="the request path")
    errors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="per-field causes where there are any: field or loc, message, code, and the "
        "context that lets the caller fix the input (entry, key, expected, maximum ...); left out "
        "when there are none",
    )
