"""The kit's commands: `execute` retries a change that lost an optimistic-concurrency race and
gives up with ConcurrentUpdate; every command error is one problem+json, mapped in one place;
a write that lost such a race outside `execute` answers 409 problem+json, never 500."""

from __future__ import annotations

import copy
import uuid
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fulfilment_kit.commands import (
    CommandError,
    ConcurrentUpdate,
    DependencyFailed,
    DependencyUnavailable,
    IdempotencyConflict,
    InvalidCommand,
    NotFound,
    StateConflict,
    execute,
)
from fulfilment_kit.http.errors import install_error_handlers
from fulfilment_kit.idempotency import fingerprint, key_id, recorded


class Counter(Aggregate):
    @event("Created")
    def __init__(self) -> None:
        self.n = 0

    @event("Incremented")
    def increment(self) -> None:
        self.n += 1


def _store_with_counter() -> tuple[Application[UUID], UUID]:
    store: Application[UUID] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    counter = Counter()
    store.save(counter)
    return store, counter.id


def _increment(store: Application[UUID], counter_id: UUID, races: list[int]) -> Counter:
    """Load, change, save; while `races` is not empty a concurrent writer saves first."""
    mine = store.repository.get(counter_id)
    if races:
        races.pop()
        theirs = copy.deepcopy(mine)
        theirs.increment()
        store.save(theirs)
    mine.increment()
    store.save(mine)  # IntegrityError when the concurrent writer took the version
    return mine


def test_execute_runs_the_change_again_after_a_conflict() -> None:
    store, counter_id = _store_with_counter()
    races = [1, 1]  # the first two attempts lose their race

    counter = execute(lambda: _increment(store, counter_id, races), attempts=3)

    assert counter.n == 3  # two concurrent increments and ours, on the newest state
    assert store.repository.get(counter_id).n == 3


def test_execute_gives_up_with_concurrent_update_naming_what_kept_changing() -> None:
    store, counter_id = _store_with_counter()
    races = [1] * 10
    with pytest.raises(ConcurrentUpdate) as gave_up:
        execute(lambda: _increment(store, counter_id, races), attempts=4, what="counter 7")

    assert str(gave_up.value) == "counter 7 kept changing concurrently; try again"
    assert len(races) == 6  # four attempts, each lost; nothing of ours was saved
    assert store.repository.get(counter_id).n == 4


def test_execute_lets_any_other_error_through_at_once() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise StateConflict("the counter is closed")

    with pytest.raises(StateConflict):
        execute(refused)
    assert calls == [1]


# --- an IntegrityError that escaped a command is a 409 too (never a 500) ---------------------


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


# --- every command error is one problem -------------------------------------------------------


class CounterNotFound(NotFound, what="counter"): ...


class InvalidStep(InvalidCommand):
    title = "Invalid step"


class Closed(StateConflict):
    @property
    def extra(self) -> dict[str, Any]:
        return {"closed_at": 12}


class CarrierDown(DependencyUnavailable):
    title = "Carrier unavailable"
    detail_format = "the carrier is down, retry: {}"


CASES: list[tuple[CommandError, int, str, str, dict[str, Any]]] = [
    (CounterNotFound(7), 404, "Not found", "counter 7 does not exist", {}),
    (StateConflict("the counter is closed"), 409, "Conflict", "the counter is closed", {}),
    (Closed("closed at noon"), 409, "Conflict", "closed at noon", {"closed_at": 12}),
    (ConcurrentUpdate("c kept changing"), 409, "Conflict", "c kept changing", {}),
    (IdempotencyConflict("key reused"), 409, "Conflict", "key reused", {}),
    (InvalidStep("a step must be positive"), 422, "Invalid step", "a step must be positive", {}),
    (DependencyFailed("card refused"), 502, "Provider refused", "card refused", {}),
    (DependencyUnavailable("timeout"), 503, "Provider unavailable", "timeout", {}),
    (CarrierDown("timeout"), 503, "Carrier unavailable", "the carrier is down, retry: timeout", {}),
]


@pytest.mark.parametrize(("error", "status", "title", "detail", "extra"), CASES)
def test_each_command_error_is_its_problem(
    error: CommandError, status: int, title: str, detail: str, extra: dict[str, Any]
) -> None:
    api = FastAPI()
    install_error_handlers(api)

    @api.post("/command")
    def command() -> None:
        raise error

    reply = TestClient(api, raise_server_exceptions=False).post("/command")

    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json() == {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }


def test_not_found_keeps_what_it_was_raised_with_as_its_message() -> None:
    missing = CounterNotFound("order 9 was paid but never seen placed")
    assert str(missing) == "order 9 was paid but never seen placed"
    assert isinstance(missing, LookupError)
    assert isinstance(InvalidStep("x"), ValueError)


# --- one idempotency fingerprint: what a key's first request recorded -------------------------


class Recorded:
    def __init__(self, request_fingerprint: str | None) -> None:
        self.request_fingerprint = request_fingerprint


def test_recorded_replays_the_same_request_and_refuses_another() -> None:
    first = Recorded(fingerprint("order", "a"))
    assert recorded(first, fingerprint("order", "a")) is first
    assert recorded(None, fingerprint("order", "a")) is None  # nothing recorded yet
    with pytest.raises(IdempotencyConflict, match="different request"):
        recorded(first, fingerprint("order", "b"))


def test_key_id_is_derived_from_the_key_else_new() -> None:
    derive = lambda key: uuid.uuid5(uuid.NAMESPACE_URL, key)  # noqa: E731
    assert key_id("k", derive) == key_id("k", derive) == derive("k")
    assert key_id(None, derive) != key_id(None, derive)
