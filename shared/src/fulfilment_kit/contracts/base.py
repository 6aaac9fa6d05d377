"""The base class of every public integration event."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from fulfilment_kit.contracts import topics

__all__ = ["CE_TYPE_PATTERN", "IntegrationEvent"]

CE_TYPE_PATTERN = re.compile(r"^fulfilment\.[a-z][a-z_]*\.[a-z][a-z_]*\.v(?P<version>[1-9][0-9]*)$")


class IntegrationEvent(BaseModel):
    """A public, versioned event: the JSON value of one CloudEvents Kafka record.

    Every subclass is a concrete event and sets `ce_type` (ending in `.v<schema_version>`),
    `topic` (a logical name from `topics`) and `schema_version`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ce_type: ClassVar[str]
    topic: ClassVar[str]
    schema_version: ClassVar[int]
    subject_fields: ClassVar[tuple[str, ...]] = ("order_id",)
    """Fields tried in order for `subject()`; the first one that is set wins."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name in ("ce_type", "topic", "schema_version"):
            if not hasattr(cls, name):
                raise TypeError(f"{cls.__name__} must set the ClassVar {name!r}")
        match = CE_TYPE_PATTERN.match(cls.ce_type)
        if match is None or int(match["version"]) != cls.schema_version:
            raise TypeError(
                f"{cls.__name__}.ce_type {cls.ce_type!r} must look like "
                f"'fulfilment.<entity>.<action>.v{cls.schema_version}'"
            )
        if cls.topic not in topics.ALL:
            raise TypeError(f"{cls.__name__}.topic {cls.topic!r} is not one of {topics.ALL}")
        unknown = [f for f in cls.subject_fields if f not in cls.model_fields]
        if unknown or not cls.subject_fields:
            raise TypeError(f"{cls.__name__}.subject_fields names unknown fields {unknown}")

    def subject(self) -> str:
        """The CloudEvents subject: the order id when set, else the SKU, case id, ..."""
        for name in self.subject_fields:
            value = getattr(self, name)
            if value is not None:
                return str(value)
        raise ValueError(f"{type(self).__name__} has none of {self.subject_fields} set")

    def key(self) -> str:
        """The Kafka record key: the order id when the event has one, else the subject."""
        order_id = getattr(self, "order_id", None)
        return str(order_id) if order_id is not None else self.subject()
