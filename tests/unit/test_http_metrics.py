"""HTTP RED metrics: counted by route template and status, never by the raw path."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException

from fulfilment_kit.http.metrics import UNMATCHED, HttpMetricsMiddleware
from fulfilment_kit.observability.metrics import REGISTRY


def _app() -> FastAPI:
    api = FastAPI()

    @api.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise HTTPException(404)
        return {"id": thing_id}

    api.add_middleware(HttpMetricsMiddleware, service="unit-red")
    return api


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": "unit-red", **labels}) or 0.0


async def test_requests_are_counted_by_route_template_and_status() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in ("/things/a1", "/things/b2", "/things/missing", "/nowhere/x9"):
            await client.get(path)

    route = {"method": "GET", "route": "/things/{thing_id}"}
    assert _value("fulfil_http_requests_total", **route, status="200") == 2
    assert _value("fulfil_http_requests_total", **route, status="404") == 1
    assert _value("fulfil_http_requests_total", method="GET", route=UNMATCHED, status="404") == 1
    assert _value("fulfil_http_request_duration_seconds_count", **route) == 3
    assert _value("fulfil_http_requests_in_flight") == 0
    paths = {
        s.labels.get("route")
        for m in REGISTRY.collect()
        for s in m.samples
        if s.labels.get("service") == "unit-red"
    }
    assert not {"/things/a1", "/things/b2", "/nowhere/x9"} & paths
