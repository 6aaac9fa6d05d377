"""The cases slice of the customer-service application: open, assign, comment, resolve and
close support cases, record missed deadlines, and list cases from the case directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import structlog
from eventsourcing.persistence import IntegrityError

from customer_service.cases.directory import CaseDirectory
from customer_service.cases.domain import Case, SlaKind, SlaPolicy, case_id_for_key
from customer_service.commands import CommandResult, CommandsBase, ToSave, correlated
from fulfilment_kit.commands import NotFound
from fulfilment_kit.idempotency import key_id, recorded, run_idempotently
from fulfilment_kit.tracing import Trace

log = structlog.get_logger(__name__)


class CaseNotFound(NotFound, what="case"): ...


@dataclass(frozen=True)
class OpenCase:
    kind: str
    priority: str
    summary: str
    order_id: UUID | None
    customer_id: UUID | None
    idempotency_key: str | None
    fingerprint: str
    trace: Trace


class CaseCommands(CommandsBase):
    """Commands and queries of cases (part of `CustomerServiceApplication`)."""

    sla: SlaPolicy
    cases: CaseDirectory

    # -- cases: commands --------------------------------------------------------------------

    def open_case(self, command: OpenCase) -> CommandResult:
        """Open a case by hand, once per Idempotency-Key."""
        case_id = key_id(command.idempotency_key, case_id_for_key)

        def attempt() -> Case:
            trace = correlated(command.trace, command.order_id or case_id)
            case = Case.open(
                case_id=case_id,
                kind=command.kind,
                priority=command.priority,
                summary=command.summary,
                order_id=command.order_id,
                customer_id=command.customer_id,
                opened_at=self.clock(),
                sla=self.sla,
                opened_by=trace.causation_id,
                request_fingerprint=command.fingerprint,
            )
            self.save(case, trace=trace)
            log.info("case opened", case_id=str(case.id), kind=case.kind, priority=case.priority)
            return case

        outcome = run_idempotently(
            replay=lambda: recorded(self.find(case_id, Case), command.fingerprint), attempt=attempt
        )
        return CommandResult(outcome.result, created=outcome.applied)

    def assign_case(self, case_id: UUID, assignee: str, trace: Trace) -> Case:
        return self._change_case(case_id, lambda case: case.assign(assignee), trace)

    def comment_case(self, case_id: UUID, author: str, text: str, trace: Trace) -> Case:
        return self._change_case(
            case_id, lambda case: case.comment(author, text, self.clock()), trace
        )

    def resolve_case(self, case_id: UUID, outcome: str, note: str | None, trace: Trace) -> Case:
        return self._change_case(
            case_id, lambda case: case.resolve(outcome, note, self.clock()), trace
        )

    def close_case(self, case_id: UUID, trace: Trace) -> Case:
        return self._change_case(case_id, lambda case: case.close(self.clock()), trace)

    def breach_sla(self, case_id: UUID, sla: SlaKind, now: datetime) -> bool:
        """Record a missed deadline once; False if it was met or reported meanwhile."""
        case = self.get_case(case_id)
        trace = Trace(
            correlation_id=str(case.order_id or case.id), causation_id=f"sla:{sla}:{case.id}"
        )
        if not case.breach(sla, now):
            return False
        try:
            self.save(case, trace=trace)
        except IntegrityError:
            return False  # the case changed meanwhile; the watch looks again
        return True

    def _change_case(self, case_id: UUID, change: Callable[[Case], object], given: Trace) -> Case:
        def run() -> ToSave[Case]:
            case = self.get_case(case_id)
            change(case)
            return case, [], correlated(given, case.order_id or case.id)

        return self._execute(run)

    # -- cases: queries ---------------------------------------------------------------------

    def get_case(self, case_id: UUID) -> Case:
        case = self.find(case_id, Case)
        if case is None:
            raise CaseNotFound(str(case_id))
        return case

    def list_cases(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        assignee: str | None = None,
        order_id: UUID | None = None,
    ) -> list[Case]:
        return self.cases.query(status=status, kind=kind, assignee=assignee, order_id=order_id)
