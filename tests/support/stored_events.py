"""Events as an earlier version of the code stored them (JSON fixtures), for tests that check
stored events still load and that today's code records the same names and fields."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, TypeVar

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

from fulfilment_kit.messaging.relay import EventMapper

AppT = TypeVar("AppT", bound=Application[Any])


def load(path: Path) -> list[Any]:
    """(originator id, version, topic, state) of each stored event."""
    rows: list[Any] = json.loads(path.read_text())
    return rows


def with_stored(app: AppT, rows: list[Any]) -> AppT:
    """`app` with `rows` inserted into its store as they were stored."""
    app.recorder.insert_events(
        [
            StoredEvent(uuid.UUID(oid), version, topic, state.encode())
            for oid, version, topic, state in rows
        ]
    )
    return app


def shapes(app: Application[Any]) -> list[tuple[str, str, set[str]]]:
    """(originator id, topic, field names) of each event in `app`'s notification log."""
    return [
        (str(n.originator_id), n.topic, set(json.loads(n.state)))
        for n in app.recorder.select_notifications(1, 1000)
    ]


def published(app: Application[Any], to_public: EventMapper) -> list[tuple[str, str, str]]:
    """(public event type, correlation id, causation id) of what each event in `app`'s
    notification log publishes, in order."""
    return [
        (type(out.event).__name__, out.correlation_id, out.causation_id)
        for n in app.recorder.select_notifications(1, 1000)
        for out in to_public(app.mapper.to_domain_event(n))
    ]
