"""JSON values: the only data that crosses a step boundary.

Inputs and outputs are stored in ``jsonb`` columns and read by workers in other languages, so a
step's output must be plain JSON. :func:`to_json` turns what handlers commonly return into it -
pydantic models, dataclasses, tuples, sets, dates, UUIDs, enums (pydantic's JSON mode) - and
rejects everything else, plus what ``jsonb`` refuses: NaN, Infinity and the NUL character
(U+0000) in a string or key.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

from pydantic_core import PydanticSerializationError, to_jsonable_python

__all__ = ["Json", "NotJsonError", "json_type_name", "to_json"]

Json: TypeAlias = "dict[str, Json] | list[Json] | str | int | float | bool | None"
"""A JSON value as Python holds it after ``json.loads``."""


class NotJsonError(ValueError):
    """Raised by :func:`to_json`; ``path`` is where in the value the problem is (``$`` = root)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{message} at {path}")
        self.reason = message
        self.path = path


def _strict_copy(value: Any, path: str) -> Json:
    # Rebuilds the value so the result shares no containers with what the handler holds.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if "\x00" in value:
            raise NotJsonError(f"string {_preview(value)} holds \\x00, which jsonb refuses", path)
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJsonError(f"{value!r} is not a JSON number", path)
        return value
    if isinstance(value, list):
        return [_strict_copy(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Json] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJsonError(f"object key {key!r} is not a string", path)
            if "\x00" in key:
                raise NotJsonError(
                    f"object key {_preview(key)} holds \\x00, which jsonb refuses", path
                )
            out[key] = _strict_copy(item, f"{path}.{key}")
        return out
    raise NotJsonError(f"{type(value).__name__} is not JSON", path)


def _preview(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def to_json(value: Any) -> Json:
    """Return ``value`` as plain JSON data, or raise :class:`NotJsonError` saying where it is not.

    Models and dataclasses become objects, tuples and sets arrays, dates/UUIDs/decimals strings
    (pydantic's JSON mode); numeric dict keys become strings as ``json.dumps`` would. Arbitrary
    objects and non-finite floats are errors.
    """
    try:
        plain = to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise NotJsonError(str(exc), "$") from exc
    return _strict_copy(plain, "$")


def json_type_name(value: Json) -> str:
    """The ``jsonb_typeof`` name of a JSON value: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
