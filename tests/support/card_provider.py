"""A card provider's REST API on loopback (a real HTTP server, not a Python mock), for the
`http` payment gateway: charges, refunds and lookups by idempotency key.

Tokens behave like the sandbox's: tok_decline / tok_insufficient_funds / tok_expired /
tok_fraud are declined (402 with that code); tok_lost_response is charged and then the
connection is dropped before any response is sent (every time: only a lookup tells); any
other token is charged. A key seen before replays its first answer and moves no money.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

DECLINES = {
    "tok_decline": "card_declined",
    "tok_insufficient_funds": "insufficient_funds",
    "tok_expired": "expired_card",
    "tok_fraud": "fraud_suspected",
}
LOST_RESPONSE = "tok_lost_response"
LOOKUP_PREFIX = "/v1/charges/by-idempotency-key/"


@dataclass
class Ledger:
    """What the provider did, for the test to assert on."""

    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    charge_requests: int = 0
    dropped_responses: int = 0
    lookups: int = 0
    money_moves: int = 0
    answered_charges: int = 0
    charge_delay_s: float = 0.0
    """A slow provider: each charge is answered only after this long."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _ProviderServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tokens are in the bodies

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}")
        return data if isinstance(data, dict) else {}

    def _send(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _drop(self) -> None:
        """Close the connection without a byte of response (the answer is lost)."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def do_POST(self) -> None:
        ledger = self.server.ledger
        if self.headers.get("Authorization") != "Bearer test-provider-key":
            self._send(401, {"code": "unauthorised"})
            return
        key = self.headers.get("Idempotency-Key") or ""
        body = self._body()
        if self.path == "/v1/charges":
            token = str(body.get("token"))
            if ledger.charge_delay_s:
                threading.Event().wait(ledger.charge_delay_s)  # the provider is slow
            with ledger.lock:
                ledger.charge_requests += 1
                charge = ledger.charges.get(key)
                if charge is None:
                    declined = DECLINES.get(token)
                    if declined is not None:
                        charge = {"status": "declined", "code": declined}
                    else:
                        charge = {"status": "captured", "id": f"ch_{uuid.uuid4().hex[:20]}"}
                        charge["amount_minor"] = body.get("amount_minor")
                        ledger.money_moves += 1
                    ledger.charges[key] = charge
                if token == LOST_RESPONSE:
                    ledger.dropped_responses += 1
                ledger.answered_charges += token != LOST_RESPONSE
            if token == LOST_RESPONSE:
                self._drop()
            elif charge["status"] == "declined":
                self._send(402, {"code": charge["code"]})
            else:
                self._send(201, {"id": charge["id"], "status": "captured"})
        elif self.path == "/v1/refunds":
            with ledger.lock:
                refund = ledger.refunds.get(key)
                if refund is None:
                    refund = {"id": f"re_{uuid.uuid4().hex[:20]}", **body}
                    ledger.refunds[key] = refund
                    ledger.money_moves += 1
            self._send(201, {"id": refund["id"]})
        else:
            self._send(404, {"code": "not_found"})

    def do_GET(self) -> None:
        ledger = self.server.ledger
        if not self.path.startswith(LOOKUP_PREFIX):
            self._send(404, {"code": "not_found"})
            return
        key = unquote(self.path[len(LOOKUP_PREFIX) :])
        with ledger.lock:
            ledger.lookups += 1
            charge = ledger.charges.get(key)
        if charge is None:
            self._send(404, {"code": "no_such_charge"})
        else:
            self._send(200, {k: v for k, v in charge.items() if k != "amount_minor"})


class _ProviderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ledger = Ledger()


@dataclass
class CardProvider:
    url: str
    ledger: Ledger
    key: str = "test-provider-key"


@contextmanager
def card_provider() -> Iterator[CardProvider]:
    """The provider listening on a free loopback port while the block runs."""
    server = _ProviderServer()
    thread = threading.Thread(target=server.serve_forever, name="card-provider", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield CardProvider(url=f"http://{host!s}:{port}", ledger=server.ledger)
    finally:
        server.shutdown()
        server.server_close()
