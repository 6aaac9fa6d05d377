"""`GET /events`: a service's public events read from its notification log (the outbox).

The records are built by the relay's own code (`relay.public_records`), so a reader of
this endpoint sees exactly what the relay publishes: the same ce_id, headers, key and
payload. Read models rebuild from it without Kafka.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Annotated, Any

from eventsourcing.application import Application
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from fulfilment_kit.http.auth import OPS, SERVICE, Caller, require
from fulfilment_kit.http.errors import problem_responses
from fulfilment_kit.messaging.relay import EventMapper, public_records
from fulfilment_kit.privacy.masking import mask_personal


class PublicEventOut(BaseModel):
    """One public event as the relay publishes it."""

    sequence: int
    """The notification id of the domain event (the record's `ce_sequence`)."""
    topic: str
    key: str
    headers: dict[str, str]
    payload: dict[str, Any]


class EventPage(BaseModel):
    """A page of the log; read on with `after=next_after` until `next_after` stays put."""

    events: list[PublicEventOut]
    next_after: int
    head: int
    """The newest notification id of the log when the page was read (for progress)."""


def read_page(
    app: Application[Any], mapper: EventMapper, source: str, after: int, limit: int
) -> EventPage:
    """Public events of the notifications after `after` (at most `limit` notifications)."""
    head = app.recorder.max_notification_id() or 0
    notifications: Sequence[Any] = app.recorder.select_notifications(after + 1, limit)
    events = [
        PublicEventOut(
            sequence=notification.id,
            topic=record.topic,
            key=record.key.decode(),
            headers={k: v.decode() for k, v in record.headers},
            payload=json.loads(record.value),
        )
        for notification in notifications
        for record in public_records(app, mapper, source, notification)
    ]
    next_after = notifications[-1].id if notifications else after
    return EventPage(events=events, next_after=next_after, head=max(head, next_after))


EventsReader = Annotated[Caller, Depends(require(SERVICE, OPS))]

MAX_EVENTS_PAGE = 5000
"""The largest page of `GET /events` (rebuilds read it in pages of this)."""


def events_router(app: Application[Any], mapper: EventMapper, source: str) -> APIRouter:
    router = APIRouter(tags=["events"])

    @router.get("/events", response_model=EventPage, responses=problem_responses())
    async def list_events(
        caller: EventsReader,
        after: int = Query(0, ge=0, description="notification id to read after"),
        limit: int = Query(
            500, ge=1, le=MAX_EVENTS_PAGE, description="notifications to read at most"
        ),
    ) -> EventPage:
        """This service's public events from its notification log, in log order.

        Personal fields are sealed as on the topics; a caller without the `service` role
        (rebuilds keep them sealed) sees them masked."""
        page = await asyncio.to_thread(read_page, app, mapper, source, after, limit)
        if SERVICE in caller.principal.roles:
            return page
        for event in page.events:
            event.payload = mask_personal(event.payload)
        return page

    return router
