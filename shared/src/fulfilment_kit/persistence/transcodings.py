"""Stores frozen dataclass value objects in eventsourcing's JSON events."""

from __future__ import annotations

import dataclasses
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding
from eventsourcing.utils import get_topic

from fulfilment_kit.persistence.moved import former_topics


class DataclassAsDict(Transcoding):
    """A frozen dataclass as a JSON object of its fields."""

    def __init__(self, cls: type[Any]) -> None:
        assert dataclasses.is_dataclass(cls), cls
        self.type = cls
        self.name = get_topic(cls)
        # Once: `dataclasses.fields` builds its tuple on every call, and a Trace is encoded
        # with every stored event (6 % of a busy service's samples).
        self.field_names = tuple(f.name for f in dataclasses.fields(cls))

    def encode(self, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in self.field_names}

    def decode(self, data: dict[str, Any]) -> Any:
        return self.type(**data)


def register_dataclasses(transcoder: JSONTranscoder, *classes: type[Any]) -> None:
    """Encode under the current topic; decode under it and any topic before a move."""
    for cls in classes:
        transcoding = DataclassAsDict(cls)
        transcoder.register(transcoding)
        for name in former_topics(cls):
            transcoder.names[name] = transcoding
