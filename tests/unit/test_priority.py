"""A process off the order's path lowers the CPU priority of all its threads, once, and only
when its entrypoint asked for it (ADR 29). Each case runs in a child interpreter: a lowered
priority cannot be raised back by an unprivileged process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, sys, threading
    from fulfilment_kit import priority

    def nice(tid=0):
        return os.getpriority(os.PRIO_PROCESS, tid)

    by, enable = int(sys.argv[1]), sys.argv[2] == "1"
    started = threading.Event()
    stop = threading.Event()
    seen = {}

    def worker(name):
        seen[name] = threading.get_native_id()
        started.set()
        stop.wait()

    before = threading.Thread(target=worker, args=("before",))
    before.start()
    started.wait()
    base = nice()
    if enable:
        priority.lower_after_start()
    changed = priority.lowered(by)
    again = priority.lowered(by)
    after = {}
    def later():
        after["nice"] = nice()
    thread = threading.Thread(target=later)
    thread.start()
    thread.join()
    result = {
        "base": base,
        "changed": changed,
        "again": again,
        "main": nice(),
        "before": nice(seen["before"]),
        "later": after["nice"],
    }
    stop.set()
    before.join()
    print(json.dumps(result))
    """
)


def run_child(by: int, *, enable: bool) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(by), "1" if enable else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return dict(json.loads(done.stdout))


def test_every_thread_and_every_later_one_runs_lower_once() -> None:
    result = run_child(10, enable=True)
    expected = min(result["base"] + 10, 19)
    assert result["changed"] >= 2  # the main thread and the one started before
    assert result["again"] == 0  # a second call lowers nothing more
    assert result["main"] == result["before"] == result["later"] == expected


def test_the_nice_value_stops_at_nineteen() -> None:
    result = run_child(40, enable=True)
    assert result["main"] == result["before"] == result["later"] == 19


def test_nothing_changes_unless_the_entrypoint_asked_or_by_is_zero() -> None:
    for by, enable in ((10, False), (0, True)):
        result = run_child(by, enable=enable)
        assert result["changed"] == 0
        assert result["main"] == result["before"] == result["later"] == result["base"]
