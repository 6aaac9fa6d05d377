"""A service process settles its heap once started: collect, freeze, space young collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from fulfilment_kit import heap


@pytest.fixture
def collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    heap._enabled = False


def test_only_a_process_entrypoint_settles_the_heap(collector: None) -> None:
    before = gc.get_threshold()
    assert heap.settled() is False  # tests start many applications: nothing frozen
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    heap.settle_after_start()
    assert heap.settled() is True
    assert gc.get_freeze_count() > 10_000  # the modules and schemas imported so far
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, before[1], before[2])
    assert gc.isenabled()  # cycles made later are still collected
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
