"""The base of every study-YAML model: unknown fields refused, no booleans as numbers, no NaN/inf, bounded seeds.

YAML reads ``true`` as a boolean and pydantic's lax mode would take it as the integer 1 (``epochs: true`` would
train one epoch); :class:`StrictModel` refuses a boolean wherever the field does not admit one, with the usual
``field path: Input should be a valid integer`` error. ``.inf`` / ``.nan`` are refused for float fields
(``allow_inf_nan=False``). :data:`Seed` is an integer in ``[0, 2**32)``: what ``numpy.random.seed`` accepts
(``torch.manual_seed`` and ``numpy.random.default_rng`` accept more), so a seed valid here works everywhere.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

SEED_LIMIT = 2**32
"""Seeds are integers in ``[0, SEED_LIMIT)``."""
NAME_MAX_LENGTH = 80
"""Longest run / rule name (it becomes a folder name, twice in compare folders ``<a>__vs__<b>``)."""

Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
"""A training / sampling seed (see the module docstring for the range)."""


class _NotABool:
    """Stands in for a boolean given to a non-boolean field, so pydantic reports that field's own type error."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    if origin is Union or origin is types.UnionType:
        return any(_admits_bool(a) for a in typing.get_args(annotation))
    return False


def _mask(value: Any, annotation: Any) -> Any:
    """``value`` with booleans replaced where ``annotation`` does not admit them (lists and dicts included)."""
    if isinstance(value, bool):
        return value if _admits_bool(annotation) else _NotABool(value)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _mask(value, typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        kind = list if isinstance(value, list) else dict if isinstance(value, dict) else None
        for member in members:
            if kind is not None and typing.get_origin(member) is kind:
                return _mask(value, member)
        return value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(annotation) or (Any,)
        return [_mask(v, item) for v in value]
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(annotation)
        item = args[1] if len(args) == 2 else Any
        return {k: _mask(v, item) for k, v in value.items()}
    return value


class StrictModel(BaseModel):
    """Frozen, unknown fields refused, booleans only where a field is boolean, finite floats only."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: (_mask(v, fields[k].annotation) if k in fields else v) for k, v in data.items()}


__all__ = ["NAME_MAX_LENGTH", "SEED_LIMIT", "Seed", "StrictModel"]
