"""A tiny consumer for testing the inbox: counts, per order, the order-placed records it applied.

Its effect is deliberately not idempotent (a counter), so a record applied twice would show.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import Aggregate, event

from fulfilment_kit.contracts import OrderPlaced
from fulfilment_kit.messaging.inbox import InboundMessage, ProcessApplication

POISON_SKU = "POISON"


class Tally(Aggregate):
    @event("Started")
    def __init__(self, id: UUID) -> None:
        self.count = 0

    @event("Counted")
    def count_one(self) -> None:
        self.count += 1


def tally_id(order_id: UUID) -> UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tally:{order_id}")


class TallyApplication(ProcessApplication):
    name = "tally"

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        # The handler "fixed" by configuration: FULFIL_TALLY_REFUSE_POISON=false.
        self.refuse_poison = os.environ.get("FULFIL_TALLY_REFUSE_POISON", "true") != "false"

    def handle(self, message: InboundMessage, processing: ProcessingEvent[UUID]) -> None:
        placed: Any = message.envelope.event
        if not isinstance(placed, OrderPlaced):
            return
        if self.refuse_poison and any(line.sku == POISON_SKU for line in placed.lines):
            raise RuntimeError("this consumer cannot handle POISON lines")
        tid = tally_id(placed.order_id)
        tally = self.get_for_update(processing, tid, Tally) or Tally(id=tid)
        tally.count_one()
        processing.collect_events(tally)

    def count(self, order_id: UUID) -> int:
        try:
            tally = self.repository.get(tally_id(order_id))
        except Exception:
            return 0
        return int(tally.count)


def tally_app(
    database: str, settings: Any = None, cls: type[TallyApplication] = TallyApplication
) -> TallyApplication:
    """A tally application (`cls`) on `database`."""
    from fulfilment_kit.persistence import eventsourcing_env
    from fulfilment_kit.settings import PostgresSettings, ServiceSettings

    env = eventsourcing_env(
        "tally", settings or ServiceSettings(), PostgresSettings(dbname=database)
    )
    return cls(env=env)


def tally_runtime(app: TallyApplication, group: str, settings: Any) -> Any:
    """The tally consumer as a service runtime of consumer group `group` on the orders topic."""
    from fulfilment_kit.contracts import topics
    from fulfilment_kit.runtime import ServiceRuntime

    return ServiceRuntime(
        service=group,
        app=app,
        mapper=lambda _: (),
        output_topics=[],
        source_topics=[topics.ORDERS],
        settings=settings,
    )


def create_runtime(settings: Any = None) -> Any:
    """The tally consumer declared as a service declares its consumers, for the operator tools
    (FULFIL_CONSUMER_RUNTIMES=<group>=tests.integration.tally:create_runtime): group
    FULFIL_TALLY_GROUP on database FULFIL_TALLY_DATABASE."""
    from fulfilment_kit.settings import ServiceSettings

    settings = settings or ServiceSettings()
    app = tally_app(os.environ["FULFIL_TALLY_DATABASE"], settings)
    return tally_runtime(app, os.environ["FULFIL_TALLY_GROUP"], settings)
