"""The case directory: every case's filterable fields and pending SLA deadlines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from customer_service.cases.domain import SLA_KINDS, Case
from fulfilment_kit.persistence.batch_load import load_aggregates
from fulfilment_kit.persistence.follower import LogFollower, Writes
from fulfilment_kit.persistence.moved import stored_topics


class CaseDirectory:
    """Every case's filterable fields and pending SLA deadlines, in the kit follower's table.

    Followed from the case events of the notification log from its persisted position (a
    restart reads only what is new); each query first catches up, so a case saved before
    the query is always in it. The SLA watch claims the due deadlines from it.
    """

    FOLLOWER = "customer-service-cases"

    def __init__(self, app: Application[UUID]) -> None:
        self.app = app
        # Stored topics include those of cases stored before `cases.domain` existed.
        events = (Case.Opened, Case.Assigned, Case.Commented, Case.Resolved, Case.Closed)
        topics = stored_topics(*events, Case.SlaBreached)
        # The projector needs only which cases changed (it loads their current state):
        # their events are handed over undecoded.
        self.follower = LogFollower(
            app, self.FOLLOWER, self._project, topics=topics, undecoded=topics
        )

    def refresh(self) -> None:
        """Catch up with the log (blocking: call from a worker thread)."""
        self.follower.catch_up()

    def _project(self, events: Sequence[Any], writes: Writes) -> None:
        touched = list(dict.fromkeys(event.originator_id for event in events))
        cases = load_aggregates(self.app, touched)  # their current state: later events agree
        for case_id in touched:
            case = cases.get(case_id)
            if not isinstance(case, Case):
                continue
            writes.put(
                "case",
                str(case.id),
                status=str(case.status),
                kind=case.kind,
                assignee=case.assignee,
                order_id=None if case.order_id is None else str(case.order_id),
                opened_at=case.opened_at.isoformat(),
            )
            for sla in SLA_KINDS:
                key = f"{case.id}:{sla}"
                if sla in case.breached or case.sla_met(sla):
                    writes.drop("sla", key)
                else:
                    writes.put(
                        "sla",
                        key,
                        due_at=case.due(sla),
                        case_id=str(case.id),
                        sla=sla,
                        priority=case.priority,
                    )

    def query(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        assignee: str | None = None,
        order_id: UUID | None = None,
    ) -> list[Case]:
        self.refresh()
        where: dict[str, Any] = {}
        if status is not None:
            where["status"] = status
        if kind is not None:
            where["kind"] = kind
        if assignee is not None:
            where["assignee"] = assignee
        if order_id is not None:
            where["order_id"] = str(order_id)
        ids = [UUID(item.key) for item in self.follower.items("case", **where)]
        found = [c for c in load_aggregates(self.app, ids).values() if isinstance(c, Case)]
        return sorted(found, key=lambda case: (case.opened_at, str(case.id)))
