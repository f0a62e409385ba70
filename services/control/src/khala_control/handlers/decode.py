"""Decoding a request through its model (handlers/schemas.py): a 400
`bad_request` naming the first refused field and its rule otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic import ValidationError as ModelError
from pydantic.fields import FieldInfo

from khala_common.http import ApiError, read_json_object

M = TypeVar("M", bound=BaseModel)


async def body(request: web.Request, model: type[M]) -> M:
    """The JSON object body as a `model`."""
    return decode(model, await read_json_object(request))


def query(request: web.Request, model: type[M]) -> M:
    """The query string as a `model` (an empty value reads as absent)."""
    return decode(model, {name: v for name, v in request.query.items() if v != ""})


def decode(model: type[M], data: Mapping[str, object]) -> M:
    """`data` as a `model`, or a 400 `bad_request` naming the first refused field."""
    try:
        return model.model_validate(data)
    except ModelError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0]) if error["loc"] else "body"
        raise ApiError(400, "bad_request", f"{name} must be {rule_of(model, name)}") from None


def rule_of(model: type[BaseModel], name: str) -> str:
    """The rule a field's description states (`Must be <rule>.`)."""
    field = model.model_fields.get(name)
    candidates = (field, *(field.metadata if field else ()))
    for meta in candidates:
        if isinstance(meta, FieldInfo) and (meta.description or "").startswith("Must be "):
            return (meta.description or "").removeprefix("Must be ").rstrip(".")
    return "a valid value"
