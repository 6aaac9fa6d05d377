"""A response view filled from a domain object: every field from the attribute of its name,
unless given (renamed or converted fields). One copy for the services' `View.of` methods."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

V = TypeVar("V", bound=BaseModel)


def view_of(view: type[V], source: object, **given: Any) -> V:
    """`view` of `source`: `given` fields as given, the others read from `source`'s attributes
    of the same names (nested models too, e.g. a list of line dataclasses); a field `source`
    lacks keeps its default."""
    read = {
        name: getattr(source, name)
        for name in view.model_fields
        if name not in given and hasattr(source, name)
    }
    return view.model_validate({**read, **given}, from_attributes=True)
