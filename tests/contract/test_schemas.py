"""The committed JSON Schemas and AsyncAPI document: drift, samples and backward compatibility."""

from __future__ import annotations

import copy
import json
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft202012Validator
from pydantic import AwareDatetime, BaseModel

from fulfilment_kit.contracts import (
    EVENT_TYPES,
    CaseOpened,
    IntegrationEvent,
    OrderPlaced,
    StockLow,
    StockReceived,
    event_class_for,
    topics,
)
from fulfilment_kit.contracts.schema_files import event_schema, render_asyncapi, render_schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "shared" / "src" / "fulfilment_kit" / "contracts" / "schemas"
ASYNCAPI = ROOT / "docs" / "asyncapi.json"
REGENERATE = "run `make schemas` (python -m fulfilment_kit.contracts.schema_files) and commit"

COMMITTED = sorted(SCHEMA_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# --- drift -------------------------------------------------------------------------------------


def test_there_is_a_committed_schema_per_event() -> None:
    assert {p.name for p in COMMITTED} >= set(render_schemas()), REGENERATE


@pytest.mark.parametrize("name", sorted(render_schemas()))
def test_committed_schema_matches_model(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.exists(), f"{name} is missing: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == render_schemas()[name], (
        f"{name} differs from the model: {REGENERATE}"
    )


def test_no_stale_schema_files() -> None:
    stale = sorted(p.name for p in COMMITTED if p.name not in render_schemas())
    assert not stale, f"schemas without an event class: {stale}: {REGENERATE}"


def test_asyncapi_matches_models() -> None:
    assert ASYNCAPI.exists(), f"{ASYNCAPI} is missing: {REGENERATE}"
    assert ASYNCAPI.read_text(encoding="utf-8") == render_asyncapi(), (
        f"docs/asyncapi.json differs from the models: {REGENERATE}"
    )


def test_asyncapi_describes_every_topic_and_resolves_payloads() -> None:
    doc = json.loads(render_asyncapi())
    assert doc["asyncapi"] == "3.0.0"
    assert {c["address"] for c in doc["channels"].values()} == set(topics.ALL)
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == set(EVENT_TYPES)
    for message in doc["components"]["messages"].values():
        ref = message["payload"]["schema"]["$ref"]
        assert (ASYNCAPI.parent / ref).resolve().is_file(), ref
    headers = doc["components"]["messageTraits"]["CloudEventsBinary"]["headers"]
    assert {"ce_id", "ce_type", "ce_subject", "traceparent", "ce_sequence"} <= set(
        headers["properties"]
    )


# --- sample instances --------------------------------------------------------------------------

FIELD_SAMPLES: dict[str, Any] = {
    "sku": "SKU-1",
    "currency": "EUR",
    "country_code": "DE",
    "rma_number": "RMA-7F3K9Q",
    "tracking_number": "1Z999AA10123456784",
    "carrier": "dhl",
    "payment_token": "tok_visa",
}


def _sample(annotation: Any, name: str, full: bool) -> Any:
    """A valid JSON value for a field, derived from its annotation."""
    if name in FIELD_SAMPLES:
        return FIELD_SAMPLES[name]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _sample(args[0], name, full)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)), name, full)
    if origin is list:
        return [_sample(args[0], name, full)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _sample_model(annotation, full)
    simple: dict[Any, Any] = {
        UUID: "0f8fad5b-d9cb-469f-a165-70867728950e",
        datetime: "2025-03-04T05:06:07Z",
        AwareDatetime: "2025-03-04T05:06:07+01:00",
        bool: True,
        int: 1,
        str: "text",
    }
    return simple[annotation]


def _sample_model(model: type[BaseModel], full: bool) -> dict[str, Any]:
    """Required fields only, or (full) every field."""
    return {
        name: _sample(field.annotation, name, full)
        for name, field in model.model_fields.items()
        if full or field.is_required()
    }


def _payload(cls: type[IntegrationEvent], full: bool) -> dict[str, Any]:
    event = cls.model_validate(_sample_model(cls, full))
    assert cls.model_validate_json(event.model_dump_json()) == event
    data: dict[str, Any] = json.loads(event.model_dump_json())
    return data


def _validator(path: Path) -> Draft202012Validator:
    schema = _load(path)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
@pytest.mark.parametrize("full", [False, True], ids=["required-only", "all-fields"])
def test_committed_schema_accepts_sample_from_model(path: Path, full: bool) -> None:
    cls = event_class_for(_load(path)["x-ce-type"])
    assert cls is not None, f"{path.name}: no event class for it: {REGENERATE}"
    payload = _payload(cls, full)
    errors = [e.message for e in _validator(path).iter_errors(payload)]
    assert not errors, f"{path.name} rejects a valid {cls.__name__}: {errors}"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_schema_rejects_unknown_properties(path: Path) -> None:
    cls = event_class_for(_load(path)["x-ce-type"])
    assert cls is not None
    payload = {**_payload(cls, full=False), "unexpected": 1}
    assert not _validator(path).is_valid(payload)


def test_order_placed_schema_rejects_bad_values() -> None:
    validator = _validator(SCHEMA_DIR / f"{OrderPlaced.ce_type}.json")
    good = _payload(OrderPlaced, full=True)
    assert validator.is_valid(good)
    for field, value in [("currency", "eur"), ("total_minor", -1), ("lines", [])]:
        assert not validator.is_valid({**good, field: value}), field
    bad_line = {**good["lines"][0], "quantity": 0}
    assert not validator.is_valid({**good, "lines": [bad_line]})


# --- backward compatibility --------------------------------------------------------------------

BOUNDS_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems")
BOUNDS_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        resolved: dict[str, Any] = root["$defs"][ref.removeprefix("#/$defs/")]
        return resolved
    return node


def _json_types(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
    node = _resolve(node, root)
    if "anyOf" in node:
        return set().union(*(_json_types(n, root) for n in node["anyOf"]))
    kind = node.get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def compatibility_problems(
    old: dict[str, Any],
    new: dict[str, Any],
    old_root: dict[str, Any],
    new_root: dict[str, Any],
    where: str = "",
) -> list[str]:
    """Why payloads valid under `old` may fail under `new`, or the reverse for required data.

    Old events stay on the topics (replays, lagging consumers), and old subscribers read new
    events, so: no required property removed or made optional, no new required property, no
    property removed (models forbid unknown keys), no type change, no tightened bound or
    pattern, no enum value removed.
    """
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    at = where or "<root>"
    problems: list[str] = []
    if _json_types(old, old_root) != _json_types(new, new_root):
        problems.append(
            f"{at}: type changed from {sorted(_json_types(old, old_root))} "
            f"to {sorted(_json_types(new, new_root))}"
        )
    for key in ("pattern", "format", "const"):
        if key in new and old.get(key) != new[key]:
            problems.append(f"{at}: {key} changed from {old.get(key)!r} to {new[key]!r}")
    for key in BOUNDS_LOWER:
        if key in new and (key not in old or new[key] > old[key]):
            problems.append(f"{at}: {key} tightened to {new[key]}")
    for key in BOUNDS_UPPER:
        if key in new and (key not in old or new[key] < old[key]):
            problems.append(f"{at}: {key} tightened to {new[key]}")
    if "enum" in old and set(old["enum"]) - set(new.get("enum", old["enum"])):
        problems.append(f"{at}: enum values removed: {set(old['enum']) - set(new['enum'])}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_req, new_req = set(old.get("required", ())), set(new.get("required", ()))
    for name in sorted(old_req):
        if name not in new_props:
            problems.append(f"{at}: required property {name!r} was removed")
        elif name not in new_req:
            problems.append(f"{at}: required property {name!r} became optional")
    for name in sorted(new_req - old_req):
        problems.append(f"{at}: new required property {name!r}: old events lack it; add a default")
    for name in sorted(old_props.keys() - new_props.keys() - old_req):
        problems.append(f"{at}: optional property {name!r} was removed (extra keys are rejected)")
    for name in sorted(old_props.keys() & new_props.keys()):
        problems += compatibility_problems(
            old_props[name], new_props[name], old_root, new_root, f"{where}.{name}".lstrip(".")
        )
    for key in ("items",):
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            problems += compatibility_problems(old[key], new[key], old_root, new_root, f"{at}[]")
    return problems


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_models_are_backward_compatible_with_committed_schemas(path: Path) -> None:
    committed = _load(path)
    cls = event_class_for(committed["x-ce-type"])
    assert cls is not None, (
        f"{path.name}: event class removed; subscribers still receive it. Keep the class, or "
        "publish a new version next to it and retire this one deliberately"
    )
    assert cls.schema_version == committed["x-schema-version"]
    live = event_schema(cls)
    problems = compatibility_problems(committed, live, committed, live)
    assert not problems, (
        f"{cls.__name__} ({cls.ce_type}) changed incompatibly: {problems}. Keep v"
        f"{cls.schema_version} as is and add a new versioned event instead"
    )


def test_compatibility_check_catches_breaking_changes() -> None:
    old = event_schema(OrderPlaced)
    assert compatibility_problems(old, old, old, old) == []

    def changed(edit: Any) -> list[str]:
        new = copy.deepcopy(old)
        edit(new)
        return compatibility_problems(old, new, old, new)

    def add_optional(s: dict[str, Any]) -> None:
        s["properties"]["channel"] = {"type": "string", "default": "web"}

    def add_required(s: dict[str, Any]) -> None:
        add_optional(s)
        s["required"].append("channel")

    def drop_required(s: dict[str, Any]) -> None:
        del s["properties"]["customer_id"]
        s["required"].remove("customer_id")

    def retype(s: dict[str, Any]) -> None:
        s["properties"]["total_minor"] = {"type": "string"}

    def tighten_nested(s: dict[str, Any]) -> None:
        s["$defs"]["OrderLine"]["properties"]["quantity"]["maximum"] = 10

    def drop_nested_optional(s: dict[str, Any]) -> None:
        del s["$defs"]["ShippingAddress"]["properties"]["line2"]

    assert changed(add_optional) == []
    assert changed(add_required)
    assert changed(drop_required)
    assert changed(retype)
    assert changed(tighten_nested)
    assert changed(drop_nested_optional)


# --- registry, subjects and keys ---------------------------------------------------------------


def test_registry_covers_every_event_class() -> None:
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES.values())) >= 30
    for ce_type, cls in EVENT_TYPES.items():
        assert cls.ce_type == ce_type
        assert ce_type.endswith(f".v{cls.schema_version}")
        assert cls.topic in topics.ALL
    assert event_class_for("fulfilment.order.placed.v1") is OrderPlaced
    assert event_class_for("fulfilment.order.placed.v999") is None


def test_subject_and_key() -> None:
    order = OrderPlaced.model_validate(_sample_model(OrderPlaced, full=True))
    assert order.subject() == order.key() == str(order.order_id)

    low = StockLow.model_validate(_sample_model(StockLow, full=False))
    assert low.subject() == low.key() == "SKU-1"

    restock = StockReceived.model_validate(_sample_model(StockReceived, full=True))
    assert restock.subject() == restock.key() == str(restock.order_id)
    purchase = StockReceived.model_validate(_sample_model(StockReceived, full=False))
    assert purchase.subject() == purchase.key() == "SKU-1"

    case_data = _sample_model(CaseOpened, full=False) | {"case_id": str(UUID(int=7))}
    case = CaseOpened.model_validate(case_data)
    assert case.subject() == case.key() == str(UUID(int=7))
    about_order = CaseOpened.model_validate(case_data | {"order_id": str(UUID(int=9))})
    assert about_order.subject() == str(UUID(int=7))
    assert about_order.key() == str(UUID(int=9))


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    data = _sample_model(OrderPlaced, full=False)
    event = OrderPlaced.model_validate(data)
    with pytest.raises(ValueError, match="frozen"):
        event.total_minor = 5
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        OrderPlaced.model_validate({**data, "note": "x"})
    with pytest.raises(ValueError, match="timezone"):
        OrderPlaced.model_validate({**data, "placed_at": "2025-03-04T05:06:07"})
