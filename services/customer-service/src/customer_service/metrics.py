"""Business metrics of customer service: returns, cases, SLA (no order, case or customer ids)."""

from __future__ import annotations

from typing import get_args
from uuid import UUID

from prometheus_client import Counter, Gauge, Histogram

from customer_service.application import CustomerServiceApplication
from customer_service.cases.domain import ACTIVE
from customer_service.cases.sla import CASE_SLA_BREACHES
from fulfilment_kit.contracts import customer_service as public
from fulfilment_kit.observability.business import EventMeter
from fulfilment_kit.observability.metrics import REGISTRY

PRIORITIES = get_args(public.CasePriority)
REASONS = (*get_args(public.ReturnReasonCode), "unclassified")
RETURN_OUTCOMES = ("requested", "authorised", "rejected", "received")

RETURNS = Counter(
    "fulfil_returns_total",
    "Return requests by reason code and what became of them (requested, authorised, ...)",
    ["reason", "outcome"],
    registry=REGISTRY,
)
CASES_OPENED = Counter(
    "fulfil_cases_opened_total",
    "Support cases opened, by priority",
    ["priority"],
    registry=REGISTRY,
)
CASES_OPEN = Gauge(
    "fulfil_cases_open",
    "Support cases open or in progress now, by priority",
    ["priority"],
    registry=REGISTRY,
)
FIRST_RESPONSE_SECONDS = Histogram(
    "fulfil_case_first_response_seconds",
    "Time from a case's opening to its first response, by priority",
    ["priority"],
    # Edges on the default first-response SLAs: 1 h urgent, 4 h high, 8 h normal, 24 h low.
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800),
    registry=REGISTRY,
)


def customer_service_meter(app: CustomerServiceApplication) -> EventMeter:
    """Returns and cases from the published events; every series present from the start."""
    for reason in REASONS:
        for outcome in RETURN_OUTCOMES:
            RETURNS.labels(reason, outcome)
    for priority in PRIORITIES:
        CASES_OPENED.labels(priority)
        CASES_OPEN.labels(priority)
        FIRST_RESPONSE_SECONDS.labels(priority)
        for sla in ("first_response", "resolution"):
            CASE_SLA_BREACHES.labels(sla, priority)
    reasons: dict[UUID, str] = {}

    def reason_of(return_id: UUID) -> str:
        if return_id not in reasons:
            try:
                code = getattr(app.get_return(return_id), "reason_code", None)
            except Exception:
                code = None
            reasons[return_id] = str(code) if code in REASONS else "unclassified"
        return reasons[return_id]

    def requested(event: public.ReturnRequested) -> None:
        reasons[event.return_id] = event.reason_code or "unclassified"
        RETURNS.labels(reasons[event.return_id], "requested").inc()

    def ended(outcome: str) -> object:
        def count(event: public.ReturnAuthorised | public.ReturnRejected) -> None:
            RETURNS.labels(reason_of(event.return_id), outcome).inc()
            if outcome != "authorised":
                reasons.pop(event.return_id, None)  # terminal: keep the map small

        return count

    meter = EventMeter()
    meter.on(public.ReturnRequested, requested)
    meter.on(public.ReturnAuthorised, ended("authorised"))  # type: ignore[arg-type]
    meter.on(public.ReturnRejected, ended("rejected"))  # type: ignore[arg-type]
    meter.on(public.ReturnReceived, ended("received"))  # type: ignore[arg-type]
    meter.on(public.CaseOpened, lambda e: CASES_OPENED.labels(e.priority).inc())
    return meter


class CaseSampler:
    """Open cases by priority and the time to first response, from the case directory."""

    def __init__(self, app: CustomerServiceApplication) -> None:
        self.app = app
        self._responded: set[UUID] = set()

    def sample(self) -> None:
        cases = self.app.list_cases()
        open_now = dict.fromkeys(PRIORITIES, 0)
        for case in cases:
            if case.status in ACTIVE:
                open_now[case.priority] = open_now.get(case.priority, 0) + 1
            if case.first_response_at is not None and case.id not in self._responded:
                self._responded.add(case.id)
                waited = (case.first_response_at - case.opened_at).total_seconds()
                FIRST_RESPONSE_SECONDS.labels(case.priority).observe(max(waited, 0.0))
        for priority, count in open_now.items():
            CASES_OPEN.labels(priority).set(count)
