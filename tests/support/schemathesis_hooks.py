"""Hooks of the schemathesis runs (loaded through SCHEMATHESIS_HOOKS).

Two things the services' OpenAPI states but JSON Schema cannot express for a generator:
- Integers are JSON integer literals. JSON Schema 2020-12 counts `137.0` as an integer and
  schemathesis sends it; the services refuse it (422), as the OpenAPI's description says.
  Generated bodies therefore spell whole numbers as integers.
- Cross-field rules that the schema states in words: each SKU at most once in an order's or a
  return's lines (once per SKU and result in an inspection), and an order total of at most
  10^12 minor units. Bodies breaking them are not generated (the unit tests cover the 422s).
"""

from __future__ import annotations

from typing import Any

import schemathesis

MAX_ORDER_TOTAL_MINOR = 10**12


def _integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integers(v) for v in value]
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    return value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    return _integers(body)


def _repeats(lines: Any, *fields: str) -> bool:
    if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
        return False
    keys = [tuple(repr(line.get(f)) for f in fields) for line in lines]
    return len(keys) != len(set(keys))


def _total(lines: Any) -> int:
    try:
        return sum(int(line["quantity"]) * int(line["unit_price_minor"]) for line in lines)
    except (KeyError, TypeError, ValueError):
        return 0


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    if not isinstance(body, dict):
        return True
    path = getattr(context.operation, "path", "")
    lines = body.get("lines")
    if path == "/orders":
        return not _repeats(lines, "sku") and _total(lines) <= MAX_ORDER_TOTAL_MINOR
    if path == "/returns":
        return not _repeats(lines, "sku")
    if path.endswith("/receipt"):
        return not _repeats(lines, "sku", "result")
    return True
