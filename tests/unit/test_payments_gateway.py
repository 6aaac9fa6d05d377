"""The payment gateways: the deterministic sandbox, the httpx adapter (MockTransport only),
the retry policy and the selection from the environment."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from payments.gateway import (
    ChargeResult,
    GatewayError,
    HttpPaymentGateway,
    RefundRejectedError,
    RetryPolicy,
    SandboxGateway,
    TransientGatewayError,
    gateway_from_settings,
)
from payments.settings import PaymentsSettings


def charge(gateway: Any, token: str, key: str = "k-1", amount: int = 500) -> ChargeResult:
    result: ChargeResult = gateway.charge(
        idempotency_key=key, amount_minor=amount, currency="EUR", token=token
    )
    return result


# -- sandbox ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_decline", "card_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
        ("tok_expired", "expired_card"),
        ("tok_fraud", "fraud_suspected"),
    ],
)
def test_sandbox_declines_by_token(token: str, code: str) -> None:
    sandbox = SandboxGateway()
    assert charge(sandbox, token) == ChargeResult.declined(code)  # type: ignore[arg-type]
    assert sandbox.money_moves == 0


@pytest.mark.parametrize("token", ["tok_visa", "tok_mastercard", "tok_anything_else"])
def test_sandbox_approves_other_tokens_and_remembers_keys(token: str) -> None:
    sandbox = SandboxGateway()
    first = charge(sandbox, token)
    assert first.captured
    assert first.provider_reference
    assert charge(sandbox, token) == first  # same key: same result, money moved once
    assert sandbox.money_moves == 1
    assert charge(sandbox, token, key="k-2").provider_reference != first.provider_reference


def test_sandbox_gateway_down_is_always_transient() -> None:
    sandbox = SandboxGateway()
    for _ in range(3):
        with pytest.raises(TransientGatewayError):
            charge(sandbox, "tok_gateway_down")


def test_sandbox_flaky_fails_once_per_key_then_approves() -> None:
    sandbox = SandboxGateway()
    with pytest.raises(TransientGatewayError):
        charge(sandbox, "tok_flaky")
    assert charge(sandbox, "tok_flaky").captured
    with pytest.raises(TransientGatewayError):
        charge(sandbox, "tok_flaky", key="k-2")


def test_sandbox_refunds_once_per_key_and_never_beyond_the_charge() -> None:
    sandbox = SandboxGateway()
    reference = charge(sandbox, "tok_visa", amount=500).provider_reference
    assert reference is not None

    def refund(key: str, amount: int) -> Any:
        return sandbox.refund(
            idempotency_key=key, provider_reference=reference, amount_minor=amount, currency="EUR"
        )

    first = refund("r-1", 300)
    assert refund("r-1", 300) == first
    with pytest.raises(RefundRejectedError, match="200 left"):
        refund("r-2", 201)
    assert refund("r-3", 200).provider_reference != first.provider_reference
    assert sandbox.money_moves == 3  # one charge, two refunds


# -- HTTP adapter ----------------------------------------------------------------------------


class Provider:
    """A MockTransport handler answering with a scripted status and body."""

    def __init__(self, status: int = 200, body: Any = None, error: Exception | None = None):
        self.status = status
        self.body = {"id": "ch_123"} if body is None else body
        self.error = error
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, json=self.body)

    def gateway(self) -> HttpPaymentGateway:
        return HttpPaymentGateway(
            "https://provider.test", "sk_test_1", transport=httpx.MockTransport(self)
        )


def test_http_charge_sends_key_auth_and_body_and_returns_the_reference() -> None:
    provider = Provider(200, {"id": "ch_123"})
    result = charge(provider.gateway(), "tok_visa", key="pay-1", amount=4321)
    assert result == ChargeResult.approved("ch_123")
    [request] = provider.requests
    assert request.method == "POST"
    assert str(request.url) == "https://provider.test/v1/charges"
    assert request.headers["Idempotency-Key"] == "pay-1"
    assert request.headers["Authorization"] == "Bearer sk_test_1"
    assert json.loads(request.content) == {
        "amount_minor": 4321,
        "currency": "EUR",
        "token": "tok_visa",
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"code": "insufficient_funds"}, "insufficient_funds"),
        ({"code": "fraud_suspected"}, "fraud_suspected"),
        ({"code": "something_new"}, "card_declined"),
        ({}, "card_declined"),
    ],
)
def test_http_402_is_a_decline(body: dict[str, str], code: str) -> None:
    result = charge(Provider(402, body).gateway(), "tok_visa")
    assert result == ChargeResult.declined(code)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "provider",
    [
        Provider(500),
        Provider(503),
        Provider(429),
        Provider(error=httpx.ReadTimeout("slow")),
        Provider(error=httpx.ConnectError("refused")),
    ],
    ids=["500", "503", "429", "timeout", "connect"],
)
def test_http_5xx_429_timeouts_and_connection_errors_are_transient(provider: Provider) -> None:
    with pytest.raises(TransientGatewayError) as raised:
        charge(provider.gateway(), "tok_visa")
    assert "tok_visa" not in str(raised.value)


def test_http_other_4xx_and_replies_without_id_are_permanent_errors() -> None:
    with pytest.raises(GatewayError) as raised:
        charge(Provider(400, {"error": "bad"}).gateway(), "tok_visa")
    assert not isinstance(raised.value, TransientGatewayError)
    with pytest.raises(GatewayError, match="no reference"):
        charge(Provider(200, {"status": "ok"}).gateway(), "tok_visa")


def test_http_refund() -> None:
    provider = Provider(201, {"id": "re_9"})
    result = provider.gateway().refund(
        idempotency_key="r-1", provider_reference="ch_123", amount_minor=50, currency="EUR"
    )
    assert result.provider_reference == "re_9"
    [request] = provider.requests
    assert str(request.url) == "https://provider.test/v1/refunds"
    assert request.headers["Idempotency-Key"] == "r-1"
    assert json.loads(request.content) == {
        "charge": "ch_123",
        "amount_minor": 50,
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    ("status", "error"),
    [(422, RefundRejectedError), (404, RefundRejectedError), (502, TransientGatewayError)],
)
def test_http_refund_errors(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        Provider(status, {"code": "x"}).gateway().refund(
            idempotency_key="r-1", provider_reference="ch_1", amount_minor=5, currency="EUR"
        )


# -- retries and selection -------------------------------------------------------------------


def test_retry_policy_backs_off_exponentially_then_gives_up() -> None:
    sleeps: list[float] = []
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise TransientGatewayError("down")

    policy = RetryPolicy(attempts=3, backoff_s=0.05, sleep=sleeps.append)
    with pytest.raises(TransientGatewayError):
        policy.call("charge", down)
    assert calls == 3
    assert sleeps == [0.05, 0.1]


def test_retry_policy_does_not_retry_permanent_errors() -> None:
    calls = 0

    def broken() -> None:
        nonlocal calls
        calls += 1
        raise GatewayError("bad request")

    with pytest.raises(GatewayError):
        RetryPolicy(sleep=lambda _: None).call("charge", broken)
    assert calls == 1


def test_gateway_and_retries_are_chosen_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(gateway_from_settings(PaymentsSettings()), SandboxGateway)
    monkeypatch.setenv("FULFIL_PAYMENTS_GATEWAY", "http")
    monkeypatch.setenv("FULFIL_PAYMENTS_PROVIDER_URL", "https://provider.test")
    monkeypatch.setenv("FULFIL_PAYMENTS_PROVIDER_KEY", "sk_live_x")
    monkeypatch.setenv("FULFIL_PAYMENTS_GATEWAY_ATTEMPTS", "5")
    monkeypatch.setenv("FULFIL_PAYMENTS_GATEWAY_BACKOFF_S", "0.2")
    settings = PaymentsSettings()
    assert "sk_live_x" not in repr(settings)
    assert isinstance(gateway_from_settings(settings), HttpPaymentGateway)
    policy = RetryPolicy.from_settings(settings)
    assert (policy.attempts, policy.backoff_s) == (5, 0.2)
