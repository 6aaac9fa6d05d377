"""The provider worker: makes the calls to the payment provider that the policy recorded as
intents (capture requested, refund requested), outside any consumer transaction, and records
their outcomes. An unclear capture outcome is reconciled by looking the charge up.

It finds its work by following the service's own notification log into the kit's follower
table (`LogFollower`, persisted position: a restart reads only what is new): one row per
capture and per refund still open. Every commit to the payments log wakes it (the
notification of any replica's commit; the policy also wakes it in-process after a commit
that asks for a call), with a slow fallback poll (`poll_interval_s`). Several replicas
are safe: every call carries the intent's idempotency key, and recording an outcome
another replica recorded first is a version conflict, then a no-op.
Rows are read, not claimed: a claim would hold a database transaction open across the
provider call, which is what this worker exists to avoid.

A round is bounded in time (`worker_round_s`; each call also has the client's own timeout):
no call keeps a consumer batch, or this loop, waiting for long. Its database work: one
transaction that catches up and reads the open calls (one statement when nothing was recorded
since its last read), one query for the payments due (`_RoundPayments`), one transaction for
the capture answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.persistence import IntegrityError
from eventsourcing.utils import get_topic

from fulfilment_kit.commands import ConcurrentUpdate
from fulfilment_kit.observability.health import Heartbeat
from fulfilment_kit.persistence.batch_load import load_aggregates
from fulfilment_kit.persistence.follower import Item, LogFollower, Notified, Writes
from fulfilment_kit.persistence.notifications import Wakeup, on_commit
from fulfilment_kit.privacy import REDACTED
from fulfilment_kit.tracing import Trace, event_trace, stamp
from payments.application import PaymentsApplication, _complete, _reject
from payments.domain import Payment
from payments.gateway import (
    ChargeResult,
    RefundRejectedError,
    TransientGatewayError,
)
from payments.settings import PaymentsSettings

log = structlog.get_logger(__name__)

FOLLOWER = "payments-provider-calls"
RETRY_AFTER_ERROR_S = 1.0
"""A failed round (e.g. the database down) is tried again this soon."""

WATCHED = (
    Payment.CaptureRequested,
    Payment.Captured,
    Payment.Failed,
    Payment.CaptureAbandoned,
    Payment.RefundRequested,
    Payment.Refunded,
    Payment.RefundRejected,
)


CAPTURE_CLOSED = frozenset(
    get_topic(cls) for cls in (Payment.Captured, Payment.Failed, Payment.CaptureAbandoned)
)
"""Events that close a capture: the follower needs only their payment's id (not decoded)."""


def _project(events: Sequence[Any], writes: Writes) -> None:
    """Rows of the calls still open: "capture" per payment, "refund" per refund."""
    for e in events:
        payment_id, kind = str(e.originator_id), type(e)  # the events' fields are untyped
        if kind is Notified:
            if e.topic in CAPTURE_CLOSED:
                writes.drop("capture", payment_id)
        elif kind is Payment.CaptureRequested:
            # The conversation the capture's outcome carries on (rows written before this
            # was kept find it in the payment's events: `step_trace`).
            trace = vars(e).get("trace")
            correlation = trace.correlation_id if isinstance(trace, Trace) else None
            writes.put("capture", payment_id, due_at=e.timestamp, correlation_id=correlation)
        elif kind in (Payment.Captured, Payment.Failed, Payment.CaptureAbandoned):
            writes.drop("capture", payment_id)
        elif kind is Payment.RefundRequested:
            writes.put("refund", str(e.refund_id), due_at=e.timestamp, payment=payment_id)
        elif kind in (Payment.Refunded, Payment.RefundRejected):
            writes.drop("refund", str(e.refund_id))


INTENTS = (Payment.Opened, Payment.CaptureRequested, Payment.RefundRequested)
"""Events whose conversation the provider worker's outcomes carry on (the last one's)."""


def has_provider_work(payment: Payment) -> bool:
    return payment.capture_pending or bool(payment.pending_refunds)


class ProviderWorker:
    """Calls the provider for recorded intents and records what it answered."""

    def __init__(
        self,
        app: PaymentsApplication,
        *,
        settings: PaymentsSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        heartbeat: Heartbeat | None = None,
        on_recorded: Callable[[], None] | None = None,
        poll_interval_s: float = 10.0,
        spacing_s: float = 0.01,
    ) -> None:
        self.app = app
        self.settings = settings or PaymentsSettings()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.heartbeat = heartbeat
        self.on_recorded = on_recorded
        self.poll_interval_s = poll_interval_s
        """The fallback poll (commits wake the worker; retries have their own due times)."""
        self.spacing_s = spacing_s
        """Least time between two rounds: a burst of commits makes one round."""
        self.follower = LogFollower(
            app,
            FOLLOWER,
            _project,
            topics=[get_topic(cls) for cls in WATCHED],
            undecoded=CAPTURE_CLOSED,
        )
        self.not_before: dict[UUID, datetime] = {}
        self.tries: dict[UUID, int] = {}
        """Unclear answers in a row, per payment (lookups, or refund attempts)."""
        self.stopped_seen: dict[UUID, datetime] = {}
        """When this worker first found no charge for a cancelled payment's capture."""
        self.capture_correlation: dict[UUID, str] = {}
        """The correlation id of each open capture's request, as its follower row says."""
        self._staged: list[_Outcome] = []
        self._staged_since = 0.0
        self._open: list[UUID] = []
        self._open_at: int | None = None
        """The open calls as of the follower's position `_open_at` (None: not read yet)."""
        self.cut_short = False
        """Whether the last round stopped at `worker_round_s` with calls left to make."""
        self.wakeup = Wakeup()

    # -- finding work -----------------------------------------------------------------------

    def catch_up(self) -> None:
        """Follow the log since the last round into the open-calls rows."""
        self.follower.catch_up()

    def open_payments(self) -> list[UUID]:
        """Payments with a call open (as the rows say), oldest first; the backoff of each is
        kept in memory (`not_before`): after a restart every open call is tried again."""
        followed = self.follower.follow("capture", "refund")
        assert followed.items is not None
        return self._calls(followed.position, followed.items)

    def _open_calls(self) -> list[UUID]:
        """`open_payments` for a round: caught up and read in one transaction, and when
        nothing was recorded since the last round's read, one statement and no read."""
        followed = self.follower.follow("capture", "refund", known=self._open_at)
        if followed.items is None:
            return self._open
        return self._calls(followed.position, followed.items)

    def _calls(self, position: int, items: list[Item]) -> list[UUID]:
        captures = [item for item in items if item.kind == "capture"]
        self.capture_correlation = {
            UUID(item.key): str(item.data["correlation_id"])
            for item in captures
            if item.data.get("correlation_id")
        }
        ids = [UUID(item.key) for item in captures]
        ids += [UUID(str(item.data["payment"])) for item in items if item.kind == "refund"]
        self._open, self._open_at = list(dict.fromkeys(ids)), position
        return self._open

    def _done(self, payment_id: UUID) -> None:
        self.not_before.pop(payment_id, None)
        self.tries.pop(payment_id, None)
        self.stopped_seen.pop(payment_id, None)

    # -- one round --------------------------------------------------------------------------

    def step(self) -> int:
        """One round (blocking: run it in a thread); returns the outcomes recorded."""
        self.cut_short = False
        open_ids = self._open_calls()
        started = time.monotonic()
        now = self.clock()
        due = [i for i in open_ids if self.not_before.get(i, now) <= now]
        payments = _RoundPayments(self.app, due)
        recorded = 0
        try:
            for payment_id in due:
                if time.monotonic() - started > self.settings.worker_round_s:
                    self.cut_short = True
                    break  # the rest waits for the next round
                now = self.clock()
                if self.not_before.get(payment_id, now) > now:
                    continue
                # Read just before the call (at most READ_FRESH_S before): a payment
                # cancelled meanwhile is never charged.
                payment = payments.take(payment_id)
                if payment is None or not has_provider_work(payment):
                    payments.give_back(payment)
                    self._done(payment_id)
                    continue
                try:
                    recorded += self._serve(payment, now)
                except ConcurrentUpdate:
                    continue  # next round
                if self._staged and (
                    len(self._staged) >= OUTCOMES_PER_TRANSACTION
                    or time.monotonic() - self._staged_since > OUTCOME_HOLD_S
                ):
                    recorded += self._record_staged()
        finally:
            payments.close()
            recorded += self._record_staged()
        return recorded

    def drain(self, rounds: int = 20) -> int:
        """Rounds until nothing is due now (tests and tools)."""
        total = 0
        for _ in range(rounds):
            recorded = self.step()
            total += recorded
            if not recorded:
                return total
        return total

    def _serve(self, payment: Payment, now: datetime) -> int:
        if payment.capture_pending:
            return self._resolve_capture(payment, now)
        recorded = 0
        for pending in list(payment.pending_refunds):
            recorded += self._refund(payment, pending.refund_id, now)
        return recorded

    # -- captures ---------------------------------------------------------------------------

    def _resolve_capture(self, payment: Payment, now: datetime) -> int:
        key = payment.capture_key
        assert key is not None
        if payment.outcome_unknown or payment.stopped:
            # Never charge blindly after an unclear answer or a cancellation: ask first.
            try:
                found = self.app.gateway.lookup(idempotency_key=key)
            except TransientGatewayError as exc:
                return self._unclear(payment, now, f"lookup: {exc}")
            if found is not None:
                return self._record(payment, found)
            if payment.stopped:
                return self._abandon_when_settled(payment, now)
            # The provider never received it: charging again with the same key is safe.
        sealed, amount, currency = payment.payment_token, payment.amount_minor, payment.currency
        assert sealed is not None
        token = self.app.vault.reveal(sealed)  # the only place the token is in clear
        if token == REDACTED:  # the customer was erased: there is no card to charge
            return self._record(payment, ChargeResult.declined("card_declined"))
        assert amount is not None
        assert currency is not None
        try:
            result = self.app.retry.call(
                "charge",
                lambda: self.app.gateway.charge(
                    idempotency_key=key, amount_minor=amount, currency=currency, token=token
                ),
            )
        except TransientGatewayError as exc:
            return self._unclear(payment, now, f"charge: {exc}")
        return self._record(payment, result)

    def _record(self, payment: Payment, result: ChargeResult) -> int:
        """Record a charge's answer: staged on `payment` (read just before the call) and
        saved with the round's other answers in one transaction (`_record_staged`)."""

        def change(p: Payment) -> bool:
            if not p.capture_pending:
                return False
            if result.captured:
                assert result.provider_reference is not None
                p.capture(provider_reference=result.provider_reference)
                if p.stopped:  # cancelled while in flight: the money goes back
                    self.app.request_cancellation_refund(p)
            else:
                assert result.failure_code is not None
                p.fail(reason_code=result.failure_code)
            return True

        trace = self.step_trace(payment, "capture")
        if not change(payment):
            return 0
        stamp(trace, payment.pending_events)
        if not self._staged:
            self._staged_since = time.monotonic()
        self._staged.append(_Outcome(payment, change, trace, result))
        return 0  # counted once saved

    def _record_staged(self) -> int:
        """Save the staged capture answers in one transaction; when a payment changed
        meanwhile (a version conflict), record each again on its newest state, one by one."""
        staged, self._staged = self._staged, []
        if not staged:
            return 0
        payments = [outcome.payment for outcome in staged]
        try:
            self.app.save(*payments)
        except IntegrityError:
            log.info("provider outcomes conflicted: recorded one by one", outcomes=len(staged))
            return sum(self._record_one(outcome) for outcome in staged)
        for outcome in staged:
            self._log_outcome(outcome, recorded=True)
            if not has_provider_work(outcome.payment):
                self._done(outcome.payment.id)
        # Saved: theirs is the stored state now. Last: another thread may take them at once.
        self.app.aggregate_cache.put(payments)
        return len(staged)

    def _record_one(self, outcome: _Outcome) -> int:
        payment = outcome.payment
        try:
            recorded = self._change(payment, outcome.change, "capture", outcome.trace)
        except ConcurrentUpdate:
            return 0  # next round
        self._log_outcome(outcome, recorded=bool(recorded))
        return recorded

    @staticmethod
    def _log_outcome(outcome: _Outcome, *, recorded: bool) -> None:
        payment, result = outcome.payment, outcome.result
        order_id = str(payment.order_id)
        if not recorded:  # a twin replica recorded the same answer first
            log.debug("provider outcome already recorded", order_id=order_id)
        elif result.captured:
            log.info("payment captured", order_id=order_id, amount_minor=payment.amount_minor)
        else:
            log.info("payment declined", order_id=order_id, reason=result.failure_code)

    def _abandon_when_settled(self, payment: Payment, now: datetime) -> int:
        """Abandon a cancelled payment's capture once lookups have found no charge for
        `capture_settle_s`: until then a charge sent just before the cancellation may still
        reach the provider (it is then recorded and refunded, never left unrecorded)."""
        first = self.stopped_seen.setdefault(payment.id, now)
        settled_at = first + timedelta(seconds=self.settings.capture_settle_s)
        if now < settled_at:
            tries = self.tries[payment.id] = self.tries.get(payment.id, 0) + 1
            delay = timedelta(seconds=self.settings.reconcile_first_s * 2 ** (tries - 1))
            self.not_before[payment.id] = min(now + delay, settled_at)
            return 0
        return self._change(payment, _abandon, "abandon")

    def _unclear(self, payment: Payment, now: datetime, reason: str) -> int:
        """No clear answer: unknown (never failed); look again later; a case past the bound."""
        s = self.settings
        tries = self.tries[payment.id] = self.tries.get(payment.id, 0) + 1
        delay = min(s.reconcile_first_s * 2 ** (tries - 1), s.reconcile_max_s)
        self.not_before[payment.id] = now + timedelta(seconds=delay)
        log.warning(
            "payment outcome unknown, will look it up",
            order_id=str(payment.order_id),
            reason=reason[:200],
            tries=tries,
            next_in_s=delay,
        )

        def change(p: Payment) -> bool:
            if not p.capture_pending:
                return False
            changed = p.note_outcome_unknown(reason=reason, at=now)
            since = p.unknown_since
            assert since is not None
            overdue = now - since >= timedelta(seconds=s.unknown_deadline_s)
            if overdue or tries >= s.reconcile_attempts:
                flagged = p.flag_unresolved(lookups=tries, at=now)
                if flagged:
                    log.error("payment outcome unresolved: case opened", order_id=str(p.order_id))
                changed = changed or flagged
            return changed

        return self._change(payment, change, "reconcile")

    # -- refunds ----------------------------------------------------------------------------

    def _refund(self, payment: Payment, refund_id: UUID, now: datetime) -> int:
        what = f"refund:{refund_id}"
        try:
            result = self.app.call_refund(payment, refund_id)
        except RefundRejectedError as exc:
            log.error("provider refused a refund: needs a human", order_id=str(payment.order_id))
            refused = str(exc)
            return self._change(payment, lambda p: _reject(p, refund_id, refused), what)
        except TransientGatewayError as exc:
            # Retried until done, with backoff: a cancellation refund always happens.
            s = self.settings
            tries = self.tries[payment.id] = self.tries.get(payment.id, 0) + 1
            delay = min(s.reconcile_first_s * 2 ** (tries - 1), s.reconcile_max_s)
            self.not_before[payment.id] = now + timedelta(seconds=delay)
            log.warning(
                "refund not done yet, retrying", order_id=str(payment.order_id), error=str(exc)
            )
            return 0
        recorded = self._change(payment, lambda p: _complete(p, refund_id, result), what)
        if recorded:
            log.info("payment refunded", order_id=str(payment.order_id))
        return recorded

    def _change(
        self,
        payment: Payment,
        change: Callable[[Payment], bool],
        what: str,
        trace: Trace | None = None,
    ) -> int:
        """Record an outcome of step `what`; 1 when this call saved it, 0 when there was
        nothing to record (a twin replica recorded it first: the newest payment has no such
        work left)."""
        saved = False

        def tracked(newest: Payment) -> bool:
            nonlocal saved
            saved = change(newest)  # the last attempt's answer is the one that was saved
            return saved

        trace = trace or self.step_trace(payment, what)
        after = self.app.record_provider_outcome(payment.order_id, tracked, trace)
        if not has_provider_work(after):
            self._done(payment.id)
        return 1 if saved else 0

    # -- the loop ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Called from any thread after a commit that asks for a provider call."""
        self.wakeup.set()

    async def run(self) -> None:
        """Rounds until cancelled; an error (e.g. the database down) waits for the next one."""
        self.wakeup.bind()
        self.app.on_provider_work = self.wake
        log.info("payment provider worker started")
        async with on_commit(self.app, self.wake):
            while True:
                try:
                    recorded = await asyncio.to_thread(self.step)
                except Exception as exc:
                    log.warning(
                        "provider worker round failed", error=f"{type(exc).__name__}: {exc}"
                    )
                    recorded, wait = 0, min(RETRY_AFTER_ERROR_S, self.poll_interval_s)
                else:
                    # A round that made every due call waits: its own commit, a new intent
                    # (in-process or any replica's) or the next retry wakes the next one.
                    wait = 0.0 if self.cut_short else self._next_wait()
                if recorded and self.on_recorded is not None:
                    self.on_recorded()
                if self.heartbeat is not None:
                    self.heartbeat.beat()
                await self.wakeup.wait(wait, spacing_s=self.spacing_s)

    def step_trace(self, payment: Payment, what: str) -> Trace:
        """A step of the worker carries on the conversation of the payment's last intent
        (while a capture is open that is its request, whose correlation id the capture's
        follower row keeps: no query)."""
        correlation = self.capture_correlation.get(payment.id) if payment.capture_pending else None
        if correlation is not None:
            return Trace(correlation, f"provider-worker:{payment.id}:{what}")
        stored = self.app.repository.event_store.get(payment.id, lte=payment.version, desc=True)
        intent = next(e for e in stored if isinstance(e, INTENTS))
        return Trace(
            correlation_id=event_trace(intent).correlation_id or str(payment.order_id),
            causation_id=f"provider-worker:{payment.id}:{what}",
        )

    def _next_wait(self) -> float:
        if not self.not_before:
            return self.poll_interval_s
        soonest = min(self.not_before.values())
        wait = (soonest - self.clock()).total_seconds()
        return max(0.01, min(wait, self.poll_interval_s))


OUTCOMES_PER_TRANSACTION = 100
"""Capture answers saved together at most (one transaction for a round's answers)."""
OUTCOME_HOLD_S = 0.05
"""Longest a staged answer waits for others (a slow provider keeps each call long)."""
READ_FRESH_S = 0.05
"""A round reads its payments with one query; those still to call are read again (one query)
once that read is older than this (a slow provider keeps each call long): a cancellation
recorded before the read is never charged; one recorded later is refunded once the capture
is recorded, as one recorded during the call is."""


class _RoundPayments:
    """The payments of one round's due calls, read with one query (ADR 23's cache: only the
    events after each cached version are decoded). The round owns what it took out of the
    cache: `take` hands one over to the caller; `close` gives the rest back unchanged."""

    def __init__(self, app: PaymentsApplication, ids: Sequence[UUID]) -> None:
        self.app = app
        self.left = list(ids)
        self.held: dict[UUID, Any] = {}
        self.read_at = -READ_FRESH_S

    def take(self, payment_id: UUID) -> Payment | None:
        if time.monotonic() - self.read_at > READ_FRESH_S:
            self._read()
        self.left = [i for i in self.left if i != payment_id]
        payment = self.held.pop(payment_id, None)
        assert payment is None or isinstance(payment, Payment)
        return payment

    def give_back(self, payment: Payment | None) -> None:
        """Give back a payment taken and left unchanged."""
        if payment is not None:
            self.app.aggregate_cache.put([payment])

    def close(self) -> None:
        held, self.held = list(self.held.values()), {}
        self.app.aggregate_cache.put(held)

    def _read(self) -> None:
        cache = self.app.aggregate_cache
        cache.put(self.held.values())  # read again: from the versions held
        self.held = load_aggregates(self.app, self.left, cache)
        self.read_at = time.monotonic()
        # The card tokens' data keys too: one key-store statement, not one per charge. Only
        # a hint: a key store down fails the reveal of each charge, not the round's lookups.
        try:
            self.app.vault.prefetch(
                p.payment_token for p in self.held.values() if p.capture_pending
            )
        except Exception as exc:
            log.warning("card token keys not prefetched", error=f"{type(exc).__name__}: {exc}")


@dataclass
class _Outcome:
    """A provider's answer applied to the payment read before the call, not saved yet."""

    payment: Payment
    change: Callable[[Payment], bool]
    trace: Trace
    result: ChargeResult


def _abandon(payment: Payment) -> bool:
    if not (payment.capture_pending and payment.stopped):
        return False
    payment.abandon_capture()
    return True
