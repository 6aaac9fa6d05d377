"""The cyclic garbage collector's settings for a long-running service process.

A service's heap after start-up is mostly what never becomes garbage: modules, pydantic
schemas, routes, the registry. CPython's full collections walked all of it again and again
under load (0.2-1.7 s per full collection on the shared machine, measured with gc.callbacks
during `python -m bench --orders 1000`), and its young collections ran every 700 container
allocations. So once a process has started, it collects once, freezes what is left (the
collector ignores it from then on) and collects the young generation less often.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Container allocations between two young collections (CPython's default: 700). Most
garbage is freed by reference counting at once; only cycles wait for the collector."""

_enabled = False


def settle_after_start() -> None:
    """Ask `settled()` to settle the heap: called by the process's entrypoint (`serve`),
    not by tests that start many applications in one interpreter."""
    global _enabled
    _enabled = True


def settled() -> bool:
    """Once start-up is done: collect, freeze the survivors, space the young collections.
    Returns whether it did (only after `settle_after_start`)."""
    if not _enabled:
        return False
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return True
