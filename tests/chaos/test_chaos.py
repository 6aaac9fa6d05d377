"""The chaos suite: orders flow through 2 replicas of every service and of the read models
while replicas are killed, added and removed, Kafka and PostgreSQL restart and the card
provider is slow; afterwards nothing is lost, doubled or oversold (CHAOS_ORDERS sizes it:
600 in `make test`, several thousand in `make chaos`)."""

from __future__ import annotations

import time

import pytest

from tests.chaos.run import Size, run_chaos, save, table

SIZE = Size.from_env()

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(int(600 + SIZE.traffic_s * 3))]


async def test_nothing_lost_doubled_or_oversold_under_chaos(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = time.monotonic()
    result = await run_chaos(SIZE)
    text = table(result, time.monotonic() - started)
    path = save(text)
    with capsys.disabled():
        print(f"\n{text}\n(saved in {path})")
    assert all(f.ended is not None for f in result.faults)
    assert len([o for o in result.orders if o.order_id]) >= 0.95 * SIZE.orders
    assert result.violations == 0, text
