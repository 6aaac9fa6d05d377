"""Masking: personal values replaced by `MASKED` for a caller whose role does not need them.

Sealed values are masked wherever they are; plaintext personal values (records from before
sealing, or a payload that failed to decode) are recognised by their field names.
"""

from __future__ import annotations

import re
from typing import Any

from fulfilment_kit.privacy.sealing import MASKED, PREFIX

__all__ = ["mask_personal", "mask_text"]

PERSONAL_OBJECTS = frozenset({"shipping_address", "billing_address", "address", "contact"})
_WORDS = r"name|email|phone|token|line\d|street|postal_code|city"
_PERSONAL_KEY = re.compile(rf"({_WORDS})", re.I)
_PERSONAL_IN_TEXT = re.compile(
    rf'("(?:[a-z_]*(?:{_WORDS})[a-z_]*)"\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.I,
)
_SEALED_IN_TEXT = re.compile(r"pii1:[a-z]+:[0-9a-f-]{36}:[0-9]+:[A-Za-z0-9_-]+")
_NOT_PERSONAL = frozenset({"ce_type", "carrier_name", "event_type", "topic"})


def mask_personal(node: Any, key: str = "") -> Any:
    """A copy of a JSON document with every personal value masked."""
    if key in PERSONAL_OBJECTS and node is not None:
        return MASKED
    if isinstance(node, dict):
        return {k: mask_personal(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [mask_personal(v, key) for v in node]
    if isinstance(node, str):
        if node.startswith(PREFIX):
            return MASKED
        if key and key not in _NOT_PERSONAL and _PERSONAL_KEY.search(key):
            return MASKED
    return node


def mask_text(text: str) -> str:
    """An error text (PostgreSQL and pydantic quote the input) with personal values masked."""
    text = _SEALED_IN_TEXT.sub(MASKED, text)
    return _PERSONAL_IN_TEXT.sub(lambda m: f'{m.group(1)}"{MASKED}"', text)
