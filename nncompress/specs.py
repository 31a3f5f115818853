"""The base of the engine's option specs: frozen pydantic models, one definition for engine and API.

A spec (fine-tuning, schedule, quantization, a job's options) is declared once, as a model with
typed, range-checked fields. The engine validates JSON with it; the service uses the same classes
as the types of its request body, so OpenAPI documents every field, bound and choice. A validation
failure in the engine becomes a :class:`~nncompress.errors.ConfigError` that names the dotted key
and says what was expected, described from the field's own JSON schema (so the message cannot
drift from the declaration):

    >>> FinetuneSpec.from_dict({"epochs": 0})
    ConfigError: finetune.epochs must be an integer >= 1, got 0

Numbers are strict: an integer field takes no ``true``, ``"3"`` or ``2.5``; floats are finite.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Strict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from nncompress.errors import ConfigError

__all__ = ["Bool", "Int", "Number", "Spec", "describe_schema", "spec_error"]

Int = Annotated[int, Strict()]  # no bool, no "3", no 3.0
Number = Annotated[float, Strict()]  # an int or a float, never a bool or a string
Bool = Annotated[bool, Strict()]  # true or false, not "yes" or 1

S = TypeVar("S", bound="Spec")


class Spec(BaseModel):
    """A frozen, validated spec; unknown keys are refused.

    Direct construction validates too (a spec object is always valid) but raises pydantic's
    ValidationError; JSON from users goes through :meth:`from_dict`, whose errors name the key.

    ``PREFIX`` is the spec's dotted key in a job (``finetune``), used in messages and
    ``context['key']`` when no other prefix is given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    PREFIX: ClassVar[str] = ""
    ERROR: ClassVar[type[ConfigError]] = ConfigError  # what a validation failure is raised as

    @classmethod
    def from_dict(cls: type[S], data: object, *, prefix: str | None = None) -> S:
        """Builds the spec from JSON-like data; missing keys take their defaults.

        Args:
            data: the mapping to read.
            prefix: dotted path of ``data`` in the job spec; default ``PREFIX``.

        Raises:
            ConfigError: not an object, an unknown key (with the nearest valid one), a wrong type
                or a value out of range; ``context['key']`` is the dotted key.
        """
        where = cls.PREFIX if prefix is None else prefix
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise cls.ERROR(f"{where} must be an object, got {type(data).__name__}", key=where)
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise spec_error(exc, cls, where) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``from_dict(spec.to_dict()) == spec``."""
        return self.model_dump(mode="json")

    @classmethod
    def raising_config_errors(cls, prefix: str | None = None) -> WrapValidator:
        """An annotation for a field of this type in another model (the service's request body):
        a failure is raised as this spec's ConfigError naming ``prefix.<key>``, as ``from_dict``
        would, instead of a pydantic ValidationError."""
        where = cls.PREFIX if prefix is None else prefix

        def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
            try:
                return handler(value)
            except ValidationError as exc:
                raise spec_error(exc, cls, where) from None

        return WrapValidator(validate)


def spec_error(exc: ValidationError, model: type[BaseModel], prefix: str) -> ConfigError:
    """The first of ``exc``'s errors as a ConfigError naming the dotted key and what was expected.

    ``context['key']`` is the dotted key (``finetune.distillation.weight``); the message also
    names a list element (``latency_batch_sizes[1]``).
    """
    error = exc.errors(include_url=False)[0]
    loc: list[str | int] = [p for p in error["loc"] if isinstance(p, (str, int))]
    names = [str(p) for p in loc if isinstance(p, str)]
    key = ".".join([prefix, *names] if prefix else names) or prefix
    shown_key = prefix
    for part in loc:
        shown_key = f"{shown_key}[{part}]" if isinstance(part, int) else f"{shown_key}.{part}".lstrip(".")
    got = error.get("input")
    raised = getattr(model, "ERROR", ConfigError)
    if error["type"] == "extra_forbidden":
        allowed = list(_properties(model, loc[:-1]))
        name = str(loc[-1])
        near = [a for a in allowed if a.startswith(name)] or difflib.get_close_matches(name, allowed, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; allowed: {', '.join(allowed)}"
        return raised(f"unknown key {key}{hint}", key=key, expected=allowed)
    field = _field_schema(model, loc)
    expected = describe_schema(field, _defs(model)) if field is not None else str(error["msg"])
    if error["type"] == "missing":
        return raised(f"{shown_key} is required: {expected}", key=key, expected=expected)
    shown = got if isinstance(got, (int, float, str, bool, type(None))) else repr(got)
    hint = _did_you_mean(got, _resolve(field, _defs(model)) if field is not None else None)
    return raised(f"{shown_key} must be {expected}, got {got!r}{hint}", key=key, expected=expected, got=shown)


def _did_you_mean(got: object, field: dict[str, Any] | None) -> str:
    choices = [str(c) for c in (field or {}).get("enum", [])]
    if not isinstance(got, str) or not choices:
        return ""
    near = [c for c in choices if c.lower() == got.lower()] or difflib.get_close_matches(
        got.lower(), choices, n=1
    )
    return f"; did you mean {near[0]!r}?" if near else ""


@cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _defs(model: type[BaseModel]) -> dict[str, Any]:
    return _schema(model).get("$defs", {})  # type: ignore[no-any-return]


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        return _resolve(defs[ref.rsplit("/", 1)[1]], defs)
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        return _resolve(options[0], defs)
    return schema


def _field_schema(model: type[BaseModel], loc: list[str | int]) -> dict[str, Any] | None:
    node: dict[str, Any] = _schema(model)
    defs = _defs(model)
    for part in loc:
        node = _resolve(node, defs)
        if isinstance(part, int) and "items" in node:
            node = node["items"]
        elif isinstance(part, str) and part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            return None
    return node


def _properties(model: type[BaseModel], loc: list[str | int]) -> dict[str, Any]:
    node = _field_schema(model, loc) if loc else _schema(model)
    return _resolve(node or {}, _defs(model)).get("properties", {})  # type: ignore[no-any-return]


def describe_schema(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """What a JSON schema admits, in words: ``an integer >= 1``, ``a number in (0, 1]``, ``one of a, b``."""
    nullable = any(o.get("type") == "null" for o in schema.get("anyOf", []))
    base = _resolve(schema, defs)
    text = _describe(base, defs)
    return f"{text} or null" if nullable else text


def _describe(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type")
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            return f"an integer in [{low}, {high}]"
        if low is not None:
            return f"an integer >= {low}"
        return "an integer" if high is None else f"an integer <= {high}"
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        lo = "(-inf" if low is None else ("(" if "exclusiveMinimum" in schema else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if "exclusiveMaximum" in schema else "]")
        return f"a number in {lo}, {hi}"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        if "description" in schema and "pattern" in schema:
            return str(schema["description"])
        return f"a string matching {schema['pattern']}" if "pattern" in schema else "a string"
    if kind == "array":
        items = _describe(_resolve(schema.get("items", {}), defs), defs)
        size = " (at least one)" if schema.get("minItems") else ""
        return f"a list of {_plural(items)}{size}"
    if kind == "object" and "properties" in schema:
        return "an object {" + ", ".join(schema["properties"]) + "}"
    if kind == "object":
        return "an object"
    return str(schema.get("description", "a valid value"))


def _plural(description: str) -> str:
    # 'an integer >= 1' -> 'integers >= 1'; other descriptions read well enough as they are.
    for single, many in (("an integer", "integers"), ("a number", "numbers"), ("an object", "objects")):
        if description.startswith(single):
            return many + description[len(single) :]
    return description
