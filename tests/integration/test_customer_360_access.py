"""The customer 360 on the real read models: a customer reads their own, another customer's
is 404 (as if it did not exist), an agent reads anyone's; the timeline is for staff."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.support.auth import bearer, customer_headers
from tests.support.projections import ProjectionsProcess, projections_process
from tests.support.public_events import EventFactory, produce


@pytest.fixture
async def rm(database: str) -> AsyncIterator[ProjectionsProcess]:
    async with projections_process(database) as process:
        yield process


async def test_a_customer_reads_only_their_own_360(rm: ProjectionsProcess) -> None:
    f = EventFactory()
    ada, bob = uuid.uuid4(), uuid.uuid4()
    order_id, events = f.order(ada, price=1200)
    await produce(events)
    caught_up = {"wait_for": events[-1].ce_id, "timeout_s": 10}
    own = await rm.client.get(f"/customers/{ada}", params=caught_up, headers=customer_headers(ada))
    assert own.status_code == 200, own.text
    assert own.json()["customer_id"] == str(ada)

    theirs = await rm.client.get(f"/customers/{ada}", headers=customer_headers(bob))
    nobody = await rm.client.get(f"/customers/{uuid.uuid4()}", headers=bearer("agent"))
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["title"] == nobody.json()["title"]
    agent = await rm.client.get(f"/customers/{ada}", headers=bearer("agent"))
    assert agent.status_code == 200
    assert agent.json() == own.json()

    timeline = await rm.client.get(f"/timeline/{order_id}", headers=customer_headers(ada))
    assert timeline.status_code == 403
    assert (
        await rm.client.get(f"/timeline/{order_id}", headers=bearer("agent"))
    ).status_code == 200
    assert (await rm.client.get("/kpis", headers=customer_headers(ada))).status_code == 403
