"""CloudEvents 1.0 Kafka binary mode: the value is the JSON payload, attributes are headers."""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pydantic

from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.registry import event_class_for

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
# Namespace of the deterministic ce_id: uuid5(namespace, "<aggregate id>:<version>[:<n>]").
CE_ID_NAMESPACE = uuid.UUID("6f1c1f4e-8a53-4c8e-9d1e-7b0c2f0e9a11")

REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time", "content-type")
_REQUIRED = frozenset(REQUIRED_HEADERS)

Headers = list[tuple[str, bytes]]


class DecodeError(Exception):
    """A record that is not a valid CloudEvent of a known type; it belongs on the DLQ."""


def event_id(aggregate_id: uuid.UUID | str, version: int, index: int = 0) -> str:
    """Deterministic, globally unique ce_id of the index-th public event of one domain event."""
    name = f"{aggregate_id}:{version}" + (f":{index}" if index else "")
    return _uuid5(name)


_CE_ID_NAMESPACE_BYTES = CE_ID_NAMESPACE.bytes


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(CE_ID_NAMESPACE, name))` without building UUID objects (the relay
    computes one per public event; the uuid module's objects cost most of it)."""
    digest = bytearray(
        hashlib.sha1(_CE_ID_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def traceparent(correlation_id: str, ce_id: str) -> str:
    """W3C traceparent: the trace is the correlation, the span is this event."""
    if len(ce_id) == 36 and _CANONICAL_UUID.fullmatch(ce_id):  # event_id's form
        span = ce_id[:8] + ce_id[9:13] + ce_id[14:18]
    else:
        span = uuid.UUID(ce_id).hex[:16]
    return f"00-{_trace_id(correlation_id)}-{span}-01"


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@functools.lru_cache(maxsize=4096)
def _trace_id(correlation_id: str) -> str:
    """An order's events share their correlation: its trace id is hashed once, not per event."""
    return uuid.uuid5(CE_ID_NAMESPACE, f"trace:{correlation_id}").hex


@dataclass(frozen=True)
class Envelope:
    """The CloudEvents attributes of one record, plus its decoded payload."""

    id: str
    type: str
    source: str
    time: datetime
    subject: str | None
    correlation_id: str | None
    causation_id: str | None
    sequence: int | None
    traceparent: str | None
    event: IntegrationEvent


def encode(
    event: IntegrationEvent,
    *,
    ce_id: str,
    source: str,
    time: datetime,
    correlation_id: str,
    causation_id: str,
    sequence: int | None = None,
) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of the Kafka record carrying `event`."""
    # Built as the record's list at once (the relay encodes every public event).
    headers: Headers = [
        ("ce_specversion", _SPECVERSION_BYTES),
        ("ce_id", ce_id.encode()),
        ("ce_type", event.ce_type.encode()),
        ("ce_source", source.encode()),
        ("ce_time", time.astimezone(UTC).isoformat().replace("+00:00", "Z").encode()),
        ("ce_subject", event.subject().encode()),
        ("content-type", _CONTENT_TYPE_BYTES),
        ("ce_correlationid", correlation_id.encode()),
        ("ce_causationid", causation_id.encode()),
        ("traceparent", traceparent(correlation_id, ce_id).encode()),
    ]
    if sequence is not None:
        headers.append(("ce_sequence", str(sequence).encode()))
    value = event.__pydantic_serializer__.to_json(event)  # model_dump_json's bytes, not str
    return event.key().encode(), value, headers


_SPECVERSION_BYTES = SPECVERSION.encode()
_CONTENT_TYPE_BYTES = CONTENT_TYPE.encode()


def header_map(headers: object) -> dict[str, str]:
    """Kafka headers as a dict of UTF-8 strings (the last value of a repeated key wins)."""
    try:  # the common case: every value is UTF-8 bytes
        return {key: raw.decode() for key, raw in headers or ()}  # type: ignore[attr-defined]
    except (UnicodeDecodeError, AttributeError):
        pass  # say which header is wrong, and skip values that are not bytes
    result: dict[str, str] = {}
    for key, raw in headers or ():  # type: ignore[attr-defined]
        if isinstance(raw, bytes | bytearray):
            try:
                result[key] = bytes(raw).decode()
            except UnicodeDecodeError as exc:
                raise DecodeError(f"header {key!r} is not UTF-8") from exc
    return result


def decode(value: bytes | None, headers: object) -> Envelope:
    """Decode a binary-mode record; raise DecodeError saying what is wrong."""
    attrs = header_map(headers)
    if not _REQUIRED.issubset(attrs):  # one set operation per record; the list on failure
        missing = [h for h in REQUIRED_HEADERS if h not in attrs]
        raise DecodeError(f"missing CloudEvents headers: {', '.join(missing)}")
    if attrs["ce_specversion"] != SPECVERSION:
        raise DecodeError(f"unsupported ce_specversion {attrs['ce_specversion']!r}")
    if attrs["content-type"].split(";")[0].strip() != CONTENT_TYPE:
        raise DecodeError(f"unsupported content-type {attrs['content-type']!r}")
    cls = event_class_for(attrs["ce_type"])
    if cls is None:
        raise DecodeError(f"unknown ce_type {attrs['ce_type']!r}")
    if value is None:
        raise DecodeError("record has no value")
    try:
        event = cls.model_validate_json(value)
    except pydantic.ValidationError as exc:
        raise DecodeError(f"payload is not a valid {attrs['ce_type']}: {exc}") from exc
    try:
        time = datetime.fromisoformat(attrs["ce_time"])
    except ValueError as exc:
        raise DecodeError(f"ce_time {attrs['ce_time']!r} is not RFC 3339") from exc
    sequence = attrs.get("ce_sequence")
    return Envelope(
        id=attrs["ce_id"],
        type=attrs["ce_type"],
        source=attrs["ce_source"],
        time=time,
        subject=attrs.get("ce_subject"),
        correlation_id=attrs.get("ce_correlationid"),
        causation_id=attrs.get("ce_causationid"),
        sequence=int(sequence) if sequence and sequence.isdigit() else None,
        traceparent=attrs.get("traceparent"),
        event=event,
    )
