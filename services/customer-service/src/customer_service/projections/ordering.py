"""Causal order of one order's events: by time, and never an effect before its cause."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]


def _key(row: Row) -> tuple[Any, ...]:
    return (row["ce_time"], row["sequence"] or 0, row["ce_id"])


def causal_order(rows: Sequence[Row]) -> list[Row]:
    """Rows sorted by (ce_time, ce_sequence, ce_id), except that an event whose
    `causation_id` is another row's `ce_id` always comes after that row (clocks of
    different services may disagree, and equal times need a tie-break)."""
    by_id = {row["ce_id"]: row for row in rows}
    effects: dict[str, list[Row]] = defaultdict(list)
    ready: list[tuple[tuple[Any, ...], Row]] = []
    for row in rows:
        cause = row["causation_id"]
        if cause in by_id and cause != row["ce_id"]:
            effects[cause].append(row)
        else:
            ready.append((_key(row), row))
    heapq.heapify(ready)
    ordered: list[Row] = []
    while ready:
        _, row = heapq.heappop(ready)
        ordered.append(row)
        for effect in effects.pop(row["ce_id"], ()):
            heapq.heappush(ready, (_key(effect), effect))
    if len(ordered) < len(rows):  # a causation cycle (never produced by the platform)
        placed = {row["ce_id"] for row in ordered}
        ordered.extend(sorted((r for r in rows if r["ce_id"] not in placed), key=_key))
    return ordered
