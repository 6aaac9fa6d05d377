"""The carrier's return-label service behind a small protocol: a deterministic sandbox (default).

Creating a label is idempotent at the carrier: the idempotency key is derived from the return
id, so a retry after a crash (label created at the carrier, not yet saved here) gets the same
label.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from customer_service.returns.domain import Label, rma_number_for
from fulfilment_kit.commands import DependencyFailed, DependencyUnavailable
from fulfilment_kit.retry import RetryingGateway
from fulfilment_kit.sandbox import IdempotentSandbox


class LabelError(DependencyFailed):
    """The carrier refused to create the label for good: retrying will not help (502)."""

    title = "Label refused"


class TransientLabelError(DependencyUnavailable):
    """The carrier is unreachable, slow or overloaded: worth retrying later (503)."""

    title = "Label service unavailable"
    detail_format = "no return label could be created, retry: {}"


class LabelGateway(Protocol):
    def create_label(self, *, idempotency_key: str, return_id: uuid.UUID, rma_number: str) -> Label:
        """A prepaid return label; the same key always returns the same label."""
        ...


def label_key(return_id: uuid.UUID) -> str:
    return f"return-label-{return_id}"


class SandboxLabels(IdempotentSandbox[Label]):
    """Labels without a network: `sandbox://labels/<RMA>`, never fails by itself.

    `fail_next` makes the next n calls raise TransientLabelError (for tests and demos).
    """

    def __init__(self, *, fail_next: int = 0) -> None:
        super().__init__(
            lambda: TransientLabelError("sandbox labels: simulated outage"), fail_next=fail_next
        )

    def create_label(self, *, idempotency_key: str, return_id: uuid.UUID, rma_number: str) -> Label:
        return self.once(idempotency_key, lambda: sandbox_label(return_id))


def sandbox_label(return_id: uuid.UUID) -> Label:
    rma = rma_number_for(return_id)
    return Label(label_id=f"LBL-{rma.removeprefix('RMA-')}", url=f"sandbox://labels/{rma}")


class RetryingLabels(RetryingGateway[LabelGateway]):
    """Retries transient failures with exponential backoff, then gives up (re-raises)."""

    transient = (TransientLabelError,)

    def create_label(self, *, idempotency_key: str, return_id: uuid.UUID, rma_number: str) -> Label:
        return self.retry(
            lambda: self.inner.create_label(
                idempotency_key=idempotency_key, return_id=return_id, rma_number=rma_number
            ),
            "return label failed, retrying",
        )
