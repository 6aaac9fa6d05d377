"""Bounded pages of a list endpoint: `limit` (at most MAX_PAGE_SIZE) and a `Link: rel="next"`.

A list response stays a JSON array (clients read it as before); when there may be more, the
`Link` header (RFC 8288) names the next page, and a client follows it until it is absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Query, Request, Response

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500

PageSize = Annotated[
    int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"items per page (at most {MAX_PAGE_SIZE})")
]

LINK_HEADER: dict[str, Any] = {
    "Link": {
        "description": 'the next page as `<url>; rel="next"`, absent on the last page',
        "schema": {"type": "string"},
    }
}
"""The `headers` of a list route's 200 response in the OpenAPI."""


def set_next_link(request: Request, response: Response, params: Mapping[str, Any] | None) -> None:
    """Add `Link: <path?query>; rel="next"` with the request's query updated by `params`
    (None: this is the last page)."""
    if params is None:
        return
    query = {k: v for k, v in request.query_params.items() if k not in params}
    query.update({k: str(v) for k, v in params.items()})
    response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'


def page_after(
    items: Sequence[T], key: Any, after: str | None, limit: int
) -> tuple[list[T], str | None]:
    """The items (sorted by `key`) after the cursor `after`, at most `limit`; and the cursor
    of the next page (None when this page is the last)."""
    rest = [item for item in items if after is None or str(key(item)) > after]
    page = rest[:limit]
    return page, (str(key(page[-1])) if len(rest) > limit else None)
