"""JSON Schemas of the public events and the AsyncAPI document, generated from the models.

Regenerate with `python -m fulfilment_kit.contracts.schema_files` (or `make schemas`);
`--check` exits non-zero when the committed files are out of date.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.registry import EVENT_TYPES

__all__ = [
    "ASYNCAPI_FILE",
    "SCHEMA_DIR",
    "SCHEMA_ID_BASE",
    "dumps",
    "event_schema",
    "main",
    "render_asyncapi",
    "render_schemas",
    "write_asyncapi",
    "write_schemas",
]

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ASYNCAPI_FILE = Path(__file__).resolve().parents[4] / "docs" / "asyncapi.json"
SCHEMA_ID_BASE = "https://schemas.fulfilment.example"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# Where docs/asyncapi.json finds the payload schemas, relative to itself.
ASYNCAPI_SCHEMA_REF_BASE = "../shared/src/fulfilment_kit/contracts/schemas"
KAFKA_BINDING_VERSION = "0.5.0"

_UUID = {"type": "string", "format": "uuid"}


def dumps(document: dict[str, Any]) -> str:
    """Stable text form: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def event_schema(cls: type[IntegrationEvent]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event payload."""
    schema = cls.model_json_schema(mode="validation")
    schema.update(
        {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"{SCHEMA_ID_BASE}/{cls.ce_type}.json",
            "title": cls.__name__,
            "x-ce-type": cls.ce_type,
            "x-topic": cls.topic,
            "x-schema-version": cls.schema_version,
        }
    )
    return schema


def render_schemas() -> dict[str, str]:
    """`<ce_type>.json` -> schema text, for every public event."""
    return {f"{ce_type}.json": dumps(event_schema(cls)) for ce_type, cls in EVENT_TYPES.items()}


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema into `directory`, delete stale `*.json`; return the files changed."""
    rendered = render_schemas()
    changed = [
        directory / n for n, text in rendered.items() if _write_if_changed(directory / n, text)
    ]
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in rendered:
            stale.unlink()
            changed.append(stale)
    return changed


def _channel_id(topic: str) -> str:
    """'fulfilment.orders.v1' -> 'orders'."""
    return topic.split(".")[1]


def _key_schema(cls: type[IntegrationEvent]) -> dict[str, Any]:
    fields = cls.model_fields
    if "order_id" in fields and fields["order_id"].is_required():
        return {**_UUID, "description": "The order id."}
    fallback = next(f for f in cls.subject_fields if f != "order_id")
    if "order_id" in fields:
        text = f"The order id when `order_id` is set, else `{fallback}`."
    else:
        text = f"The `{fallback}` of the event."
    return {"type": "string", "description": text}


def _message(cls: type[IntegrationEvent], schema_ref_base: str) -> dict[str, Any]:
    doc = (cls.__doc__ or "").strip()
    return {
        "name": cls.ce_type,
        "title": cls.__name__,
        "summary": doc.splitlines()[0] if doc else cls.__name__,
        "contentType": "application/json",
        "traits": [{"$ref": "#/components/messageTraits/CloudEventsBinary"}],
        "headers": {
            "type": "object",
            "properties": {"ce_type": {"type": "string", "const": cls.ce_type}},
        },
        "payload": {
            "schemaFormat": "application/schema+json;version=draft-2020-12",
            "schema": {"$ref": f"{schema_ref_base}/{cls.ce_type}.json"},
        },
        "bindings": {"kafka": {"key": _key_schema(cls), "bindingVersion": KAFKA_BINDING_VERSION}},
        "x-schema-version": cls.schema_version,
    }


def _cloudevents_trait() -> dict[str, Any]:
    def text(description: str, **extra: Any) -> dict[str, Any]:
        return {"type": "string", "description": description, **extra}

    properties = {
        "ce_specversion": text("CloudEvents spec version.", const="1.0"),
        "ce_id": text("Globally unique, deterministic from aggregate id and version."),
        "ce_type": text("The event type, e.g. fulfilment.order.placed.v1."),
        "ce_source": text("The producing service, a URI reference.", format="uri-reference"),
        "ce_time": text("When the event happened (RFC 3339).", format="date-time"),
        "ce_subject": text("The order id (or SKU / case id when not about an order)."),
        "content-type": text("Media type of the value.", const="application/json"),
        "ce_correlationid": text("Id shared by every event caused by one original request."),
        "ce_causationid": text("ce_id of the message (or request id) that caused this event."),
        "ce_sequence": text("Position in the producer's outbox (decimal).", pattern="^[0-9]+$"),
        "traceparent": text(
            "W3C Trace Context.", pattern="^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
        ),
    }
    return {
        "summary": "CloudEvents 1.0 Kafka binary mode: attributes as headers, JSON value.",
        "headers": {
            "type": "object",
            "required": sorted(set(properties) - {"ce_sequence"}),
            "properties": properties,
        },
    }


def render_asyncapi(schema_ref_base: str = ASYNCAPI_SCHEMA_REF_BASE) -> str:
    """The AsyncAPI 3.0 document (JSON text) describing every topic and its messages."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in topics.ALL:
        cid = _channel_id(topic)
        classes = [cls for cls in EVENT_TYPES.values() if cls.topic == topic]
        refs = {c.__name__: {"$ref": f"#/components/messages/{c.__name__}"} for c in classes}
        messages.update({c.__name__: _message(c, schema_ref_base) for c in classes})
        channels[cid] = {
            "address": topic,
            "title": f"{cid} events",
            "description": (
                f"Public events of the {cid} service, keyed by order id (see each message's "
                f"key). Dead letters per consumer: `{topic}.dlq.<consumer>`. The broker name "
                "carries the optional FULFIL_TOPIC_PREFIX."
            ),
            "messages": refs,
        }
        channel_ref = {"$ref": f"#/channels/{cid}"}
        msg_refs = [{"$ref": f"#/channels/{cid}/messages/{name}"} for name in refs]
        operations[f"{cid}.publish"] = {
            "action": "send",
            "channel": channel_ref,
            "summary": f"The {cid} service publishes through its outbox relay.",
            "messages": msg_refs,
        }
        for consumer, sources in topics.CONSUMERS.items():
            if topic in sources:
                operations[f"{consumer}.consume.{cid}"] = {
                    "action": "receive",
                    "channel": channel_ref,
                    "summary": f"Consumer group {consumer} reads {cid} events.",
                    "messages": msg_refs,
                    "bindings": {
                        "kafka": {
                            "groupId": {"type": "string", "enum": [consumer]},
                            "bindingVersion": KAFKA_BINDING_VERSION,
                        }
                    },
                }
    document = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Fulfilment platform events",
            "version": "1.0.0",
            "description": (
                "Public integration events of the order fulfilment platform. Generated from "
                "fulfilment_kit.contracts by `python -m fulfilment_kit.contracts.schema_files`; "
                "do not edit."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "The local KRaft broker of deploy/local.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "messageTraits": {"CloudEventsBinary": _cloudevents_trait()},
        },
    }
    return dumps(document)


def write_asyncapi(path: Path = ASYNCAPI_FILE) -> bool:
    """Write the AsyncAPI document; return whether it changed."""
    return _write_if_changed(path, render_asyncapi())


def _stale(schema_dir: Path, asyncapi: Path) -> list[str]:
    rendered = render_schemas()
    problems = [n for n, t in rendered.items() if _read(schema_dir / n) != t]
    problems += [p.name for p in schema_dir.glob("*.json") if p.name not in rendered]
    if _read(asyncapi) != render_asyncapi():
        problems.append(str(asyncapi))
    return problems


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or with --check, verify) the committed schemas and AsyncAPI document."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--schemas-dir", type=Path, default=SCHEMA_DIR)
    parser.add_argument("--asyncapi", type=Path, default=ASYNCAPI_FILE)
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = _stale(args.schemas_dir, args.asyncapi)
        for name in problems:
            print(f"out of date: {name}")
        return 1 if problems else 0
    changed = write_schemas(args.schemas_dir)
    if write_asyncapi(args.asyncapi):
        changed.append(args.asyncapi)
    for path in changed:
        print(f"updated {path}")
    print(f"{len(EVENT_TYPES)} event schemas in {args.schemas_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
