"""Issue 11: list endpoints (/stock, /cases, /events) answer bounded pages; `Link: rel="next"`
leads through every item exactly once."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from fulfilment_kit.http.pagination import MAX_PAGE_SIZE
from tests.unit.test_bad_input_stays_harmless import _assert_problem
from tests.unit.test_bad_input_stays_harmless import clients as clients


def _walk(client: TestClient, url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    while url:
        reply = client.get(url)
        assert reply.status_code == 200, reply.text
        pages.append([item.get("sku") or item["summary"] for item in reply.json()])
        link = reply.headers.get("link")
        url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else ""  # type: ignore[union-attr]
    return pages


def test_stock_pages_follow_the_link_header(clients: dict[str, TestClient]) -> None:
    client = clients["inventory"]
    skus = [f"PAGE-{n}" for n in range(5)]
    for sku in skus:
        assert client.post(f"/stock/{sku}/receipts", json={"quantity": 1}).status_code == 200
    pages = _walk(client, "/stock?limit=2")
    listed = [sku for page in pages for sku in page if sku.startswith("PAGE-")]
    assert listed == skus
    assert all(len(page) <= 2 for page in pages)
    assert len(pages) >= 3


def test_case_pages_follow_the_link_header(clients: dict[str, TestClient]) -> None:
    client = clients["customer-service"]
    summaries = [f"paged case {n}" for n in range(5)]
    for summary in summaries:
        reply = client.post("/cases", json={"kind": "complaint", "summary": summary})
        assert reply.status_code == 201, reply.text
    pages = _walk(client, "/cases?kind=complaint&limit=2")
    assert [s for page in pages for s in page if s.startswith("paged case")] == summaries
    assert [len(p) for p in pages][:2] == [2, 2]


@pytest.mark.parametrize(
    ("service", "url"),
    [
        ("inventory", f"/stock?limit={MAX_PAGE_SIZE + 1}"),
        ("inventory", "/stock?limit=0"),
        ("customer-service", f"/cases?limit={MAX_PAGE_SIZE + 1}"),
        ("customer-service", "/cases?offset=-1"),
        ("orders", "/events?limit=5001"),
    ],
)
def test_page_sizes_are_bounded(clients: dict[str, TestClient], service: str, url: str) -> None:
    _assert_problem(clients[service].get(url), 422)
