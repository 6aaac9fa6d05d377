"""Issue 11 "the OpenAPI tells the truth": every error is problem+json, 405 lists every method
of the path, and each service's OpenAPI documents its problem statuses and strict schemas."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_bad_input_stays_harmless import _assert_problem
from tests.unit.test_bad_input_stays_harmless import clients as clients


def test_an_unknown_route_is_404_problem_json(clients: dict[str, TestClient]) -> None:
    problem = _assert_problem(clients["orders"].get("/no/such/route"), 404)
    assert "/no/such/route" in problem["detail"]


@pytest.mark.parametrize(
    ("service", "method", "path", "allow"),
    [
        ("customer-service", "DELETE", "/cases", "GET, POST"),
        ("orders", "PUT", "/orders", "POST"),
        ("inventory", "DELETE", "/stock/MUG-1", "GET"),
        ("inventory", "POST", "/stock/MUG-1/threshold", "PUT"),
    ],
)
def test_405_is_problem_json_and_allow_lists_every_method_of_the_path(
    clients: dict[str, TestClient], service: str, method: str, path: str, allow: str
) -> None:
    reply = clients[service].request(method, path)
    problem = _assert_problem(reply, 405)
    assert reply.headers["allow"] == allow
    assert method in problem["detail"]


def test_a_body_that_is_not_json_is_a_problem(clients: dict[str, TestClient]) -> None:
    reply = clients["orders"].post(
        "/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert reply.status_code in (400, 422)
    assert reply.headers["content-type"] == "application/problem+json"


def _openapi(client: TestClient) -> dict[str, Any]:
    reply = client.get("/openapi.json")
    assert reply.status_code == 200
    schema: dict[str, Any] = reply.json()
    return schema


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
    ]


@pytest.mark.parametrize("service", ["orders", "inventory", "shipping", "customer-service"])
def test_every_error_response_is_documented_as_problem_json(
    clients: dict[str, TestClient], service: str
) -> None:
    schema = _openapi(clients[service])
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for method, path, op in _operations(schema):
        statuses = set(op["responses"])
        assert {"400", "413", "422", "500", "503"} <= statuses, (method, path, statuses)
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == ["application/problem+json"], (
                    method,
                    path,
                    status,
                )
                ref = response["content"]["application/problem+json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Problem"
        assert "Retry-After" in op["responses"]["503"]["headers"]
        names = [p["name"] for p in op.get("parameters", [])]
        assert "X-Correlation-Id" in names


@pytest.mark.parametrize(
    ("service", "method", "path", "statuses"),
    [
        ("orders", "GET", "/orders/{order_id}", {"404"}),
        ("orders", "POST", "/orders/{order_id}/cancel", {"404", "409"}),
        ("orders", "POST", "/orders", {"409"}),
        ("inventory", "GET", "/stock/{sku}", {"404"}),
        ("inventory", "PUT", "/stock/{sku}/threshold", {"404"}),
        ("inventory", "POST", "/stock/{sku}/adjustments", {"404", "409"}),
        ("inventory", "GET", "/reservations/{order_id}", {"404"}),
        ("shipping", "POST", "/shipments/{order_id}/dispatch", {"404", "409", "502", "503"}),
        ("shipping", "POST", "/carrier/webhooks", {"404", "409"}),
        ("customer-service", "POST", "/returns", {"404", "409", "502", "503"}),
        ("customer-service", "POST", "/cases/{case_id}/comments", {"404", "409"}),
        ("customer-service", "GET", "/cases/{case_id}", {"404"}),
    ],
)
def test_route_specific_statuses_are_documented(
    clients: dict[str, TestClient], service: str, method: str, path: str, statuses: set[str]
) -> None:
    op = _openapi(clients[service])["paths"][path][method.lower()]
    assert statuses <= set(op["responses"]), set(op["responses"])


def test_request_schemas_are_as_strict_as_the_server(clients: dict[str, TestClient]) -> None:
    schemas = _openapi(clients["orders"])["components"]["schemas"]
    order = schemas["PlaceOrderRequest"]["properties"]
    assert "EUR" in order["currency"]["enum"]
    assert "XTS" not in order["currency"]["enum"]
    address = schemas["ShippingAddressInput"]["properties"]
    assert "DE" in address["country_code"]["enum"]
    assert "\\u0000-\\u001F" in address["recipient_name"]["pattern"]
    line = schemas["OrderLine"]["properties"]
    assert line["quantity"]["type"] == "integer"
