"""Kit: one retry loop for transient gateway failures (exponential backoff, then re-raise), the
retrying gateway base and the idempotent sandbox the carrier and label fakes share."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fulfilment_kit.retry import RetryingGateway, retry_transient
from fulfilment_kit.sandbox import IdempotentSandbox


class Transient(Exception):
    pass


class Refused(Exception):
    pass


def failing(failures: int, error: Exception, calls: list[int]) -> Callable[[], str]:
    def call() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "ok"

    return call


def test_retries_transient_failures_with_exponential_backoff_then_succeeds() -> None:
    calls: list[int] = []
    sleeps: list[float] = []
    result = retry_transient(
        failing(2, Transient("down"), calls),
        attempts=3,
        backoff_s=0.05,
        transient=(Transient,),
        sleep=sleeps.append,
    )
    assert result == "ok"
    assert len(calls) == 3
    assert sleeps == [0.05, 0.1]


def test_gives_up_after_its_attempts_and_reraises_the_last_failure() -> None:
    calls: list[int] = []
    sleeps: list[float] = []
    with pytest.raises(Transient, match="down"):
        retry_transient(
            failing(10, Transient("down"), calls),
            attempts=4,
            backoff_s=0.1,
            transient=(Transient,),
            sleep=sleeps.append,
        )
    assert len(calls) == 4
    assert sleeps == [0.1, 0.2, 0.4]


def test_does_not_retry_other_errors() -> None:
    calls: list[int] = []
    sleeps: list[float] = []
    with pytest.raises(Refused):
        retry_transient(
            failing(10, Refused("no"), calls),
            attempts=3,
            backoff_s=0.05,
            transient=(Transient,),
            sleep=sleeps.append,
        )
    assert len(calls) == 1
    assert sleeps == []


def test_one_attempt_is_one_call_and_fewer_is_refused() -> None:
    calls: list[int] = []
    with pytest.raises(Transient):
        retry_transient(
            failing(1, Transient("down"), calls),
            attempts=1,
            backoff_s=0.05,
            transient=(Transient,),
            sleep=lambda _: pytest.fail("no retry with one attempt"),
        )
    assert len(calls) == 1
    with pytest.raises(ValueError, match="at least 1"):
        retry_transient(lambda: None, attempts=0, backoff_s=0, transient=(Transient,))


class Flaky(IdempotentSandbox[str]):
    def __init__(self, *, fail_next: int = 0) -> None:
        super().__init__(lambda: Transient("sandbox down"), fail_next=fail_next)

    def fetch(self, key: str) -> str:
        return self.once(key, lambda: f"result-{key}-{self.calls}")


class RetryingFlaky(RetryingGateway[Flaky]):
    transient = (Transient,)

    def fetch(self, key: str) -> str:
        return self.retry(lambda: self.inner.fetch(key), "flaky failed, retrying")


def test_a_sandbox_keeps_the_first_result_of_a_key_and_fails_on_demand() -> None:
    sandbox = Flaky(fail_next=1)
    with pytest.raises(Transient):
        sandbox.fetch("a")
    assert sandbox.fetch("a") == "result-a-2"
    assert sandbox.fetch("a") == "result-a-2"
    assert sandbox.fetch("b") == "result-b-4"
    assert sandbox.calls == 4


def test_a_retrying_gateway_retries_its_inner_gateway_with_backoff() -> None:
    sleeps: list[float] = []
    inner = Flaky(fail_next=2)
    assert RetryingFlaky(inner, backoff_s=0.05, sleep=sleeps.append).fetch("a") == "result-a-3"
    assert sleeps == [0.05, 0.1]
    inner.fail_next = 3
    with pytest.raises(Transient):
        RetryingFlaky(inner, sleep=lambda _: None).fetch("b")
    assert inner.calls == 6
    with pytest.raises(ValueError, match="at least 1"):
        RetryingFlaky(inner, attempts=0)
