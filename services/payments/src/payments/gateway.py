"""The payment provider behind a small protocol: a deterministic sandbox and an httpx adapter.

Calls are synchronous: the inbox policy runs in a worker thread, and the HTTP API calls the
application through `asyncio.to_thread`. Every call carries an idempotency key, so repeating
it (a retry, a redelivered message) never moves money twice.

Tokens are personal data: they go to the provider and nowhere else (no logs, no errors).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, get_args
from urllib.parse import quote

import httpx

from fulfilment_kit.commands import DependencyFailed, DependencyUnavailable
from fulfilment_kit.contracts.payments import PaymentFailureCode
from fulfilment_kit.retry import retry_transient
from payments.settings import PaymentsSettings

T = TypeVar("T")

FAILURE_CODES: frozenset[str] = frozenset(get_args(PaymentFailureCode))


class GatewayError(DependencyFailed):
    """The provider refused a request for a reason retrying will not fix (502)."""

    title = "Payment provider refused the refund"  # the one call an HTTP route makes


class TransientGatewayError(GatewayError, DependencyUnavailable):
    """The provider could not be reached or answered 5xx/429: retrying may succeed (503)."""

    title = "Payment provider unavailable"
    detail_format = "retry later with the same Idempotency-Key"


class RefundRejectedError(GatewayError):
    """The provider refused the refund (e.g. more than the charge, unknown charge)."""


@dataclass(frozen=True)
class ChargeResult:
    """Captured with the provider's reference, or declined with a failure code."""

    captured: bool
    provider_reference: str | None = None
    failure_code: PaymentFailureCode | None = None

    @classmethod
    def approved(cls, provider_reference: str) -> ChargeResult:
        return cls(captured=True, provider_reference=provider_reference)

    @classmethod
    def declined(cls, failure_code: PaymentFailureCode) -> ChargeResult:
        return cls(captured=False, failure_code=failure_code)


@dataclass(frozen=True)
class RefundResult:
    provider_reference: str


class PaymentGateway(Protocol):
    def charge(
        self, *, idempotency_key: str, amount_minor: int, currency: str, token: str
    ) -> ChargeResult:
        """Authorise and capture `amount_minor`; raise TransientGatewayError to be retried."""
        ...

    def refund(
        self, *, idempotency_key: str, provider_reference: str, amount_minor: int, currency: str
    ) -> RefundResult:
        """Give back part or all of a charge; raise TransientGatewayError to be retried."""
        ...

    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        """What became of the charge sent with `idempotency_key`: captured or declined, or
        None when the provider never received it. TransientGatewayError: ask again later."""
        ...


# -- sandbox ---------------------------------------------------------------------------------

SANDBOX_DECLINES: dict[str, PaymentFailureCode] = {
    "tok_decline": "card_declined",
    "tok_insufficient_funds": "insufficient_funds",
    "tok_expired": "expired_card",
    "tok_fraud": "fraud_suspected",
}


SANDBOX_UNAVAILABLE = frozenset({"tok_gateway_down"})
SANDBOX_FLAKY = frozenset({"tok_flaky"})
SANDBOX_LOST_RESPONSE = frozenset({"tok_lost_response"})


class SandboxGateway:
    """Deterministic outcomes by token; remembers idempotency keys (in memory).

    tok_decline / tok_insufficient_funds / tok_expired / tok_fraud decline with that code;
    tok_gateway_down is always unavailable (charges and lookups); tok_flaky is unavailable on
    the first attempt of each idempotency key, then approves; tok_lost_response approves (the
    money moves) but the answer is lost on the way back (transient), so only a lookup tells;
    any other token approves. A key seen before returns
    its first result and moves no money. Refunds beyond a known charge are refused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._charges: dict[str, ChargeResult] = {}
        self._charged: dict[str, int] = {}  # provider reference -> amount
        self._refunds: dict[str, RefundResult] = {}
        self._refunded: dict[str, int] = {}  # provider reference -> refunded so far
        self._attempts: dict[str, int] = {}
        self._down: set[str] = set()  # keys whose charge met tok_gateway_down
        self.money_moves = 0
        self.lookups = 0

    def charge(
        self, *, idempotency_key: str, amount_minor: int, currency: str, token: str
    ) -> ChargeResult:
        with self._lock:
            known = self._charges.get(idempotency_key)
            if known is not None:
                if token in SANDBOX_LOST_RESPONSE:
                    raise TransientGatewayError("sandbox: the response was lost")
                return known
            attempt = self._attempts[idempotency_key] = self._attempts.get(idempotency_key, 0) + 1
            if token in SANDBOX_UNAVAILABLE:
                self._down.add(idempotency_key)
            if token in SANDBOX_UNAVAILABLE or (token in SANDBOX_FLAKY and attempt == 1):
                raise TransientGatewayError("sandbox: provider unavailable")
            declined = SANDBOX_DECLINES.get(token)
            if declined is not None:
                result = ChargeResult.declined(declined)
            else:
                reference = f"ch_{uuid.uuid5(uuid.NAMESPACE_OID, idempotency_key).hex[:24]}"
                result = ChargeResult.approved(reference)
                self._charged[reference] = amount_minor
                self.money_moves += 1
            self._charges[idempotency_key] = result
            if token in SANDBOX_LOST_RESPONSE:
                raise TransientGatewayError("sandbox: the response was lost")
            return result

    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        with self._lock:
            self.lookups += 1
            if idempotency_key in self._down:
                raise TransientGatewayError("sandbox: provider unavailable")
            return self._charges.get(idempotency_key)

    def refund(
        self, *, idempotency_key: str, provider_reference: str, amount_minor: int, currency: str
    ) -> RefundResult:
        with self._lock:
            known = self._refunds.get(idempotency_key)
            if known is not None:
                return known
            charged = self._charged.get(provider_reference)
            refunded = self._refunded.get(provider_reference, 0)
            if charged is not None and refunded + amount_minor > charged:
                raise RefundRejectedError(
                    f"sandbox: refund exceeds the charge ({charged - refunded} left)"
                )
            self._refunded[provider_reference] = refunded + amount_minor
            result = RefundResult(f"re_{uuid.uuid5(uuid.NAMESPACE_OID, idempotency_key).hex[:24]}")
            self._refunds[idempotency_key] = result
            self.money_moves += 1
            return result


# -- HTTP provider ---------------------------------------------------------------------------


class HttpPaymentGateway:
    """A card provider's REST API over a sync httpx.Client.

    POST /v1/charges {amount_minor, currency, token} -> 2xx {"id"}; 402 {"code"} is a decline.
    POST /v1/refunds {charge, amount_minor, currency} -> 2xx {"id"}.
    Both send `Idempotency-Key`. 5xx, 429, timeouts and connection errors are transient.
    GET /v1/charges/by-idempotency-key/{key} -> 200 {"id", "status": "captured"} or
    {"status": "declined", "code"}; 404: the provider never received that charge.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def charge(
        self, *, idempotency_key: str, amount_minor: int, currency: str, token: str
    ) -> ChargeResult:
        reply = self._post(
            "/v1/charges",
            idempotency_key,
            {"amount_minor": amount_minor, "currency": currency, "token": token},
        )
        if reply.status_code == 402:
            code = _json(reply).get("code")
            return ChargeResult.declined(code if code in FAILURE_CODES else "card_declined")  # type: ignore[arg-type]
        self._raise_for_status(reply, "charge")
        return ChargeResult.approved(_reference(reply))

    def refund(
        self, *, idempotency_key: str, provider_reference: str, amount_minor: int, currency: str
    ) -> RefundResult:
        reply = self._post(
            "/v1/refunds",
            idempotency_key,
            {"charge": provider_reference, "amount_minor": amount_minor, "currency": currency},
        )
        if 400 <= reply.status_code < 500 and reply.status_code != 429:
            raise RefundRejectedError(
                f"provider refused the refund: HTTP {reply.status_code} {_json(reply).get('code')}"
            )
        self._raise_for_status(reply, "refund")
        return RefundResult(_reference(reply))

    def lookup(self, *, idempotency_key: str) -> ChargeResult | None:
        path = f"/v1/charges/by-idempotency-key/{quote(idempotency_key, safe='')}"
        try:
            reply = self._client.get(path)
        except httpx.TimeoutException as exc:
            raise TransientGatewayError("provider timed out on a lookup") from exc
        except httpx.TransportError as exc:
            raise TransientGatewayError(
                f"provider unreachable on a lookup: {type(exc).__name__}"
            ) from exc
        if reply.status_code == 404:
            return None
        self._raise_for_status(reply, "lookup")
        data = _json(reply)
        if data.get("status") == "declined":
            code = data.get("code")
            return ChargeResult.declined(code if code in FAILURE_CODES else "card_declined")  # type: ignore[arg-type]
        if data.get("status") != "captured":
            raise TransientGatewayError(f"provider lookup answered status {data.get('status')!r}")
        return ChargeResult.approved(_reference(reply))

    def _post(self, path: str, idempotency_key: str, body: dict[str, object]) -> httpx.Response:
        try:
            return self._client.post(path, json=body, headers={"Idempotency-Key": idempotency_key})
        except httpx.TimeoutException as exc:
            raise TransientGatewayError(f"provider timed out on {path}") from exc
        except httpx.TransportError as exc:
            raise TransientGatewayError(
                f"provider unreachable on {path}: {type(exc).__name__}"
            ) from exc

    @staticmethod
    def _raise_for_status(reply: httpx.Response, what: str) -> None:
        if reply.status_code >= 500 or reply.status_code == 429:
            raise TransientGatewayError(f"provider {what} failed: HTTP {reply.status_code}")
        if not reply.is_success:
            raise GatewayError(f"provider {what} failed: HTTP {reply.status_code}")


def _json(reply: httpx.Response) -> dict[str, object]:
    try:
        data = reply.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reference(reply: httpx.Response) -> str:
    reference = _json(reply).get("id")
    if not isinstance(reference, str) or not reference:
        raise GatewayError("provider reply has no reference id")
    return reference


# -- configuration and retries ---------------------------------------------------------------


def gateway_from_settings(settings: PaymentsSettings | None = None) -> PaymentGateway:
    settings = settings or PaymentsSettings()
    if settings.gateway == "http":
        return HttpPaymentGateway(
            settings.provider_url,
            settings.provider_key.get_secret_value(),
            timeout_s=settings.provider_timeout_s,
        )
    return SandboxGateway()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 0.05
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_settings(cls, settings: PaymentsSettings) -> RetryPolicy:
        return cls(attempts=settings.gateway_attempts, backoff_s=settings.gateway_backoff_s)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Call `fn`, retrying TransientGatewayError with exponential backoff; re-raise the last."""
        return retry_transient(
            fn,
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            transient=(TransientGatewayError,),
            sleep=self.sleep,
            event="payment gateway unavailable, retrying",
            call=what,
        )
