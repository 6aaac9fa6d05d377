"""The CPU priority of a process off the order's path: under contention the order's path runs
first (ADR 29).

Customer-service's cases and the read models follow the orders, and no order waits for them
(`ProcessRuntime.background_consumers`). On a machine whose CPUs are busy their batches
competed with the order's path for the same cores; a higher nice value makes the kernel give
them the CPU the order's path leaves, without changing what either does.
"""

from __future__ import annotations

import os

MAX_NICE = 19

_enabled = False


def lower_after_start() -> None:
    """Ask `lowered()` to lower the priority: called by the process's entrypoint (`serve`), not
    by tests that start many processes in one interpreter (an unprivileged process cannot
    raise its priority back)."""
    global _enabled
    _enabled = True


def _threads() -> list[int]:
    """This process's threads (Linux keeps a nice value per thread); elsewhere the process."""
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except FileNotFoundError:
        return [0]


def lowered(by: int) -> int:
    """Raise the nice value of every thread of this process by `by` (up to 19), once (only
    after `lower_after_start`, and only the first time); threads started later inherit it
    from their creator. Returns how many threads it changed."""
    global _enabled
    if not _enabled or by <= 0:
        return 0
    _enabled = False
    changed = 0
    for tid in _threads():
        try:
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(current + by, MAX_NICE))
        except ProcessLookupError:  # a thread that just ended
            continue
        changed += 1
    return changed
