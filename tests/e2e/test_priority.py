"""The processes off the order's path (customer-service, the read models) run every thread at
a lower CPU priority than the processes on it, as `make run` starts them (ADR 29)."""

from __future__ import annotations

import os

from fulfilment_kit.settings import ServiceSettings
from tests.e2e.platform import PROCESSES, Platform

OFF_THE_PATH = {"customer-service", "read-models"}


def thread_nice_values(pid: int) -> set[int]:
    """The nice value of each thread of `pid` (Linux keeps one per thread)."""
    values = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            values.add(os.getpriority(os.PRIO_PROCESS, int(tid)))
        except ProcessLookupError:  # a thread that just ended
            continue
    return values


async def test_the_processes_off_the_orders_path_run_lower(platform: Platform) -> None:
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    lowered = min(ours + ServiceSettings().background_nice, 19)
    for name in PROCESSES:
        proc = platform[name].process.proc
        assert proc is not None, name
        assert proc.poll() is None, name
        expected = lowered if name in OFF_THE_PATH else ours
        assert thread_nice_values(proc.pid) == {expected}, name
