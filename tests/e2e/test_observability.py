"""Ops can run the platform from its dashboards: after e2e traffic, a real Prometheus scraping
the five services answers every panel's query; every alert expression is valid against it;
no label carries an id; one correlation id tells an order's story in every service's log
with no personal data anywhere; and health follows Kafka going away and coming back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings
from tests.e2e.platform import PROCESSES, SERVICES, Platform, new_sku
from tests.e2e.test_after_sales import delivered_order, receive, return_accepted
from tests.e2e.test_lifecycle import dispatch
from tests.support.auth import signed
from tests.support.polling import eventually
from tests.support.processes import REPO
from tests.support.prometheus import (
    DEPLOYMENT,
    PrometheusServer,
    alert_rules,
    load_dashboards,
    panel_queries,
    substitute,
)

# Windows wide enough to cover the whole test session's traffic.
RATE_INTERVAL = "10m"
RANGE = "30m"
MAX_SERIES_PER_SERVICE = 4000

SENTINEL_EMAIL = "zebedee.sentinel.h5@example.invalid"
SENTINEL_STREET = "17 Sentinelweg Quuxstrasse"
SENTINEL_NAME = "Zebedee Sentinel-Quux"
SENTINEL_TOKEN = "tok_sentinelquux"
SENTINELS = (SENTINEL_EMAIL, SENTINEL_STREET, SENTINEL_NAME, SENTINEL_TOKEN)


@dataclass
class Traffic:
    started: float
    order_ids: list[str] = field(default_factory=list)
    skus: list[str] = field(default_factory=list)
    correlation_id: str = ""
    sentinel_order: str = ""


async def _poison_orders_topic() -> None:
    """A record no consumer can decode: each consumer of the orders topic dead-letters it."""
    producer = kafka.producer(KafkaSettings())
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.physical(topics.ORDERS), value=b"not a cloudevent", key=b"obs-poison"
        )
    finally:
        await producer.stop()


async def _sentinel_order(platform: Platform, sku: str, correlation_id: str) -> str:
    body = {
        "customer_id": str(uuid.uuid4()),
        "lines": [{"sku": sku, "quantity": 1, "unit_price_minor": 1500}],
        "currency": "EUR",
        "payment_token": SENTINEL_TOKEN,
        "shipping_address": {
            "recipient_name": SENTINEL_NAME,
            "line1": SENTINEL_STREET,
            "line2": SENTINEL_EMAIL,
            "city": "Berlin",
            "postal_code": "10115",
            "country_code": "DE",
        },
    }
    async with platform["orders"].client() as client:
        reply = await client.post(
            "/orders",
            json=body,
            headers={"Idempotency-Key": str(uuid.uuid4()), "X-Correlation-Id": correlation_id},
        )
        assert reply.status_code == 201, reply.text
        return str(reply.json()["order_id"])


@pytest.fixture(scope="module")
async def traffic(platform: Platform, prometheus: PrometheusServer) -> Traffic:
    """Orders to every outcome, a return, a case with a reply, and a poison record."""

    async def scraping() -> list[dict[str, Any]]:
        return await prometheus.query(f'up{{deployment="{DEPLOYMENT}"}} == 1')

    # Prometheus sees each counter before the traffic moves it (it cannot see an increase
    # that happened before its first scrape).
    await eventually(
        scraping, until=lambda up: len(up) == len(PROCESSES), timeout=60, what="first scrapes"
    )
    seen = Traffic(started=time.time())
    mug, tee, scarce = new_sku("OBS"), new_sku("OBS"), new_sku("OBS")
    seen.skus = [mug, tee, scarce]
    await platform.receive_stock(mug, 20)
    await platform.receive_stock(tee, 20)
    await platform.receive_stock(scarce, 1)

    returned = await delivered_order(platform, [(mug, 2, 1299), (tee, 1, 2499)])
    accepted = await return_accepted(platform, returned["order_id"], [(mug, 1)], "damaged")
    await receive(platform, accepted["return_id"], [(mug, 1, "restockable")])
    declined = await platform.place_order([(tee, 1, 2499)], token="tok_decline")
    rejected = await platform.place_order([(scarce, 5, 100)])
    cancelled = await platform.place_order([(tee, 1, 2499)])
    await platform.order_reaches(cancelled["order_id"], "paid")
    async with platform["orders"].client() as client:
        reply = await client.post(f"/orders/{cancelled['order_id']}/cancel")
        # A paid order's cancellation is a request shipping answers (ADR 12).
        assert reply.status_code == 202, reply.text
    await platform.order_reaches(cancelled["order_id"], "cancelled")
    await platform.order_reaches(declined["order_id"], "cancelled")
    await platform.order_reaches(rejected["order_id"], "rejected")

    async with platform["customer-service"].client() as client:
        reply = await client.post(
            "/cases",
            json={"kind": "inquiry", "priority": "normal", "summary": "where is my parcel"},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert reply.status_code == 201, reply.text
        case_id = reply.json()["case_id"]
        comment = {"author": "agent-7", "text": "It is on its way."}
        reply = await client.post(f"/cases/{case_id}/comments", json=comment)
        assert reply.status_code == 200, reply.text

    seen.correlation_id = f"obs-{uuid.uuid4()}"
    seen.sentinel_order = await _sentinel_order(platform, mug, seen.correlation_id)
    await platform.order_reaches(seen.sentinel_order, "paid")
    shipment = await dispatch(platform, seen.sentinel_order)
    async with platform["shipping"].client() as client:
        hook = {"tracking_number": shipment["tracking_number"], "status": "delivered"}
        assert (await client.post("/carrier/webhooks", **signed(hook))).status_code == 200
    await platform.order_reaches(seen.sentinel_order, "delivered")
    await _poison_orders_topic()
    seen.order_ids = [
        returned["order_id"],
        declined["order_id"],
        rejected["order_id"],
        cancelled["order_id"],
        seen.sentinel_order,
    ]

    # Prometheus has scraped the outcome of all of it (counted by the relays, sampled by
    # the consumer watches every few seconds).
    async def scraped() -> list[dict[str, Any]]:
        return await prometheus.query(
            f'sum(fulfil_orders_total{{deployment="{DEPLOYMENT}", outcome="delivered"}}) >= 2'
            f' and on() sum(fulfil_dlq_published_total{{deployment="{DEPLOYMENT}"}}) >= 1'
            f' and on() sum(fulfil_cases_open{{deployment="{DEPLOYMENT}"}}) >= 1'
            f' and on() sum(fulfil_case_first_response_seconds_count{{deployment="{DEPLOYMENT}"}})'
            " >= 1"
            f' and on() count(fulfil_consumer_lag_records{{deployment="{DEPLOYMENT}"}}) > 0'
        )

    await eventually(scraped, until=bool, timeout=90, what="traffic scraped by Prometheus")
    return seen


async def test_every_panel_of_every_dashboard_returns_data(
    prometheus: PrometheusServer, traffic: Traffic
) -> None:
    boards = load_dashboards()
    assert set(boards) == {
        "fulfilment-overview",
        "fulfilment-service-health",
        "fulfilment-event-pipeline",
        "fulfilment-customer-service",
    }
    # The deployment variable's own query offers this deployment.
    offered = await prometheus.api("label/deployment/values")
    assert DEPLOYMENT in offered
    empty: list[str] = []
    evaluated = 0
    for board in boards.values():
        for title, _, expr in panel_queries(board):
            promql = substitute(
                expr, rate_interval=RATE_INTERVAL, range_=RANGE, deployment=DEPLOYMENT
            )
            result = await prometheus.query(promql)
            evaluated += 1
            if not result:
                empty.append(f"{board['title']} / {title}: {promql}")
    assert evaluated >= 40
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # Not just present at zero: the traffic shows in the panels that count it.
    def positive(expr: str) -> str:
        return f"({expr}) > 0"

    d = f'deployment="{DEPLOYMENT}"'
    for expr in (
        f'sum(fulfil_orders_total{{{d}, outcome="placed"}})',
        f"sum(fulfil_paid_order_value_minor_sum{{{d}}})",
        f'sum(fulfil_refunds_minor_total{{{d}, reason="return_received"}})',
        f'sum(fulfil_returns_total{{{d}, outcome="received"}})',
        f'sum(fulfil_payment_outcomes_total{{{d}, code="card_declined"}})',
        f'sum(fulfil_http_requests_total{{{d}, route="/orders", method="POST"}})',
        f"sum(fulfil_relay_published_total{{{d}}})",
        f'sum(fulfil_dlq_published_total{{{d}, reason="undecodable"}})',
        f"sum(fulfil_case_first_response_seconds_count{{{d}}})",
        f"count(fulfil_ready{{{d}}} == 1)",
    ):
        assert await prometheus.query(positive(expr)), f"no traffic counted by {expr}"

    preview = os.environ.get("FULFIL_DASHBOARD_PREVIEW_DIR")
    if preview:
        from tests.support.preview import render_dashboards

        written = await render_dashboards(
            prometheus, boards, Path(preview), start=traffic.started - 5, end=time.time()
        )
        assert written, "no preview written"


async def test_every_alert_expression_is_valid_against_the_live_prometheus(
    prometheus: PrometheusServer, traffic: Traffic
) -> None:
    rules = alert_rules()
    assert len(rules) >= 11
    known = set(await prometheus.api("label/__name__/values"))
    for rule in rules:
        await prometheus.query(rule["expr"])  # raises with Prometheus's error if invalid
        names = set(re.findall(r"\b((?:fulfil|process)_[a-z_]+|up)\b", rule["expr"]))
        missing = {n for n in names if n not in known and n != "up"}
        assert not missing, f"{rule['alert']} names metrics nobody exports: {missing}"

    async def loaded() -> list[dict[str, Any]]:
        data = await prometheus.api("rules", type="alert")
        return [r for g in data["groups"] for r in g["rules"]]

    live = await eventually(
        loaded,
        until=lambda rs: len(rs) == len(rules) and all(r.get("health") == "ok" for r in rs),
        timeout=30,
        what="every alert rule loaded and evaluated without error",
    )
    assert {r["name"] for r in live} == {r["alert"] for r in rules}


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_ID = re.compile(r"\b[0-9a-fA-F]{16,}\b")
_SKU_LIKE = re.compile(r"\b[A-Z0-9]+-[0-9A-F]{8}\b")
_NUMBER_ID = re.compile(r"^\d{6,}$")
# `revision` names the source commit of the build (fulfil_build_info), not an entity.
_NOT_ENTITY_LABELS = frozenset({"revision", "le", "quantile", "version"})


async def test_metric_labels_carry_no_ids_and_series_are_bounded(
    platform: Platform, traffic: Traffic
) -> None:
    offending: list[str] = []
    for name in PROCESSES:
        async with platform[name].client() as client:
            text = (await client.get("/metrics")).text
        for entity in (*traffic.order_ids, *traffic.skus, *SENTINELS):
            assert entity not in text, f"{name}'s metrics contain {entity!r}"
        series = 0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                series += 1
                for label, value in sample.labels.items():
                    if label in _NOT_ENTITY_LABELS:
                        continue
                    if (
                        _UUID.search(value)
                        or _HEX_ID.search(value)
                        or _SKU_LIKE.search(value)
                        or _NUMBER_ID.match(value)
                    ):
                        offending.append(f"{name}: {sample.name}{{{label}={value!r}}}")
        assert series <= MAX_SERIES_PER_SERVICE, f"{name} exports {series} series"
        assert series > 100, f"{name} exports only {series} series"
    assert not offending, "labels that look like ids:\n" + "\n".join(offending[:20])


def _log_lines(platform: Platform, name: str) -> list[dict[str, Any]]:
    lines = []
    for raw in platform[name].process.log_text().splitlines():
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


async def test_one_correlation_id_tells_an_order_story_in_all_five_logs_without_personal_data(
    platform: Platform, prometheus: PrometheusServer, traffic: Traffic
) -> None:
    order_id = traffic.sentinel_order
    for name in SERVICES:

        async def story(service: str = name) -> list[dict[str, Any]]:
            return [
                line
                for line in _log_lines(platform, service)
                if line.get("correlation_id") == traffic.correlation_id
            ]

        lines = await eventually(story, until=bool, timeout=30, what=f"{name} logs the order")
        assert all(line.get("service") == name for line in lines)
        if name != "orders":  # the others reacted to events of the order
            handled = [line for line in lines if line.get("event") == "handling event"]
            assert handled, f"{name} logged no handled event of the order"
            assert any(line.get("order_id") == order_id for line in handled)
            assert all(line.get("causation_id") and line.get("event_type") for line in handled)
        else:
            assert any(line.get("order_id") == order_id for line in lines)

    for name in PROCESSES:
        text = platform[name].process.log_text()
        for sentinel in SENTINELS:
            assert sentinel not in text, f"{name}'s log contains personal data {sentinel!r}"
    for sentinel in SENTINELS:
        found = await prometheus.query(f'{{__name__=~"fulfil_.+", deployment="{DEPLOYMENT}"}}')
        assert not any(sentinel in json.dumps(s["metric"]) for s in found)


def _stack(command: str) -> None:
    """Stop or start this run's own local broker (deploy/local/stack.sh, our KAFKA_PORT)."""
    env = dict(os.environ)
    local = f"127.0.0.1:{env.get('KAFKA_PORT', '19092')}"
    bootstrap = env.pop("KAFKA_BOOTSTRAP_SERVERS", local)
    assert bootstrap == local, f"the test stops only the local broker, not {bootstrap}"
    subprocess.run(
        ["bash", str(REPO / "deploy" / "local" / "stack.sh"), command],
        check=True,
        timeout=180,
        stdout=subprocess.DEVNULL,
        env=env,
    )


async def _status(url: str, path: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return (await client.get(path)).status_code


async def test_livez_stays_up_while_kafka_is_down_and_readyz_follows_it(
    platform: Platform, traffic: Traffic
) -> None:
    urls = {name: platform[name].url for name in PROCESSES}
    for url in urls.values():
        assert await _status(url, "/readyz") == 200
    _stack("kafka-down")
    try:
        for name, url in urls.items():
            await eventually(
                lambda u=url: _status(u, "/readyz"),
                until=lambda s: s == 503,
                timeout=60,
                what=f"{name} not ready without Kafka",
            )
        async with httpx.AsyncClient(base_url=urls["orders"], timeout=10) as client:
            body = (await client.get("/readyz")).json()
        assert body["problems"]["kafka"]
        held_until = time.monotonic() + 10

        async def all_alive() -> float:
            for name, url in urls.items():
                assert await _status(url, "/livez") == 200, f"{name} not alive without Kafka"
            return time.monotonic()

        # Liveness holds throughout (sampled every half second), not just once.
        await eventually(
            all_alive,
            until=lambda now: now >= held_until,
            timeout=30,
            interval=0.5,
            what="liveness held for 10 s without Kafka",
        )
    finally:
        _stack("kafka-up")
    for name, url in urls.items():
        await eventually(
            lambda u=url: _status(u, "/readyz"),
            until=lambda s: s == 200,
            timeout=120,
            what=f"{name} ready again once Kafka is back",
        )
        assert await _status(url, "/livez") == 200
    # and the platform works again end to end
    sku = new_sku("OBS")
    await platform.receive_stock(sku, 2)
    order = await platform.place_order([(sku, 1, 700)])
    await platform.order_reaches(order["order_id"], "paid", timeout=120)
