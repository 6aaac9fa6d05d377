"""Stores frozen dataclass value objects in eventsourcing's JSON events."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
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


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoder, parsing with orjson: the same objects, decoded cheaper.

    Every read of an event pays the decode (the relay, the log followers, loading an
    aggregate). orjson parses in a fraction of the stdlib's time; the object hook then runs
    over the parsed values innermost first, as the stdlib parser calls it. Encoding is
    unchanged, so stored events keep their exact bytes. What orjson refuses and the stdlib
    accepts (integers beyond 64 bits, NaN) is decoded by the stdlib as before."""

    def __init__(self) -> None:
        super().__init__()
        names = self.names  # registrations add to this dict: the closure sees them
        hook = self._decode_obj

        def revive(obj: Any) -> Any:
            """The stdlib's object hook, applied innermost first as its parser does."""
            if type(obj) is list:
                return [revive(v) if type(v) is dict or type(v) is list else v for v in obj]
            for key, value in obj.items():
                if type(value) is dict or type(value) is list:
                    obj[key] = revive(value)
            if len(obj) == 2 and "_type_" in obj and "_data_" in obj:
                transcoding = names.get(obj["_type_"])
                return hook(obj) if transcoding is None else transcoding.decode(obj["_data_"])
            return obj

        self._revive = revive

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            return super().decode(data)
        if type(parsed) is dict or type(parsed) is list:
            return self._revive(parsed)
        return parsed
