"""Kit: one retry loop for transient gateway failures (exponential backoff, then re-raise)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fulfilment_kit.retry import retry_transient


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
