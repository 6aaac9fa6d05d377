"""What returns and cases share: the namespace of their ids, the text limit, and the errors of
a command that breaks an invariant.

Both are pure domain: no I/O, no frameworks, no clocks (time is passed in). Public methods
check the invariants first and raise before any event is recorded; a repeat of what already
happened returns False and records nothing.
"""

from __future__ import annotations

import uuid

from fulfilment_kit.commands import StateConflict

CUSTOMER_SERVICE_NAMESPACE = uuid.UUID("6c1f4e2a-8b3d-4a7e-9f05-2d7c3b1a9e48")

MAX_TEXT = 500


class CustomerServiceError(StateConflict):
    """A command that breaks an invariant (409 unless a subclass says otherwise)."""


class InvalidTransition(CustomerServiceError):
    """The return's or case's status does not allow this command: HTTP 409."""
