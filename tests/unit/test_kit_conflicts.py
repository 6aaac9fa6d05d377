"""A write that lost an optimistic-concurrency race answers 409 problem+json, never 500."""

from __future__ import annotations

import copy
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fulfilment_kit.http.errors import install_error_handlers
from fulfilment_kit.idempotency import ConcurrentUpdate


class Counter(Aggregate):
    @event("Created")
    def __init__(self) -> None:
        self.n = 0

    @event("Incremented")
    def increment(self) -> None:
        self.n += 1


def api_over(store: Application[UUID], counter_id: UUID) -> FastAPI:
    api = FastAPI()
    install_error_handlers(api)

    @api.post("/race")
    def race() -> dict[str, int]:
        mine = store.repository.get(counter_id)
        theirs = copy.deepcopy(mine)  # a concurrent request loaded the same version
        theirs.increment()
        store.save(theirs)
        mine.increment()
        store.save(mine)  # eventsourcing raises IntegrityError: version taken
        return {"n": mine.n}

    @api.post("/gave-up")
    def gave_up() -> None:
        raise ConcurrentUpdate("the counter kept changing; try again")

    return api


def test_integrity_error_of_a_concurrent_update_is_a_409_problem() -> None:
    store: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    counter = Counter()
    store.save(counter)
    client = TestClient(api_over(store, counter.id), raise_server_exceptions=False)

    reply = client.post("/race")
    assert reply.status_code == 409
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["title"] == "Conflict"
    assert "concurrent" in reply.json()["detail"]
    assert "stored_events" not in reply.text  # no table or key names leak

    gave_up = client.post("/gave-up")
    assert (gave_up.status_code, gave_up.json()["detail"]) == (
        409,
        "the counter kept changing; try again",
    )
