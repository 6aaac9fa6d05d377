"""Which of a service's domain events are public, and as what: the relay's mapper, declared.

A service's `contracts.py` is only its mappings::

    to_public = PublicEvents()
    to_public.copy(
        Payment.Captured, PaymentCaptured, "order_id amount_minor currency",
        payment_id=AGGREGATE_ID, captured_at=RECORDED_AT,
    )

Each public event is published with the causal context stamped on its domain event (its
`trace`); a domain event nobody mapped stays private.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from eventsourcing.utils import resolve_topic

from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.messaging.relay import EventToPublish
from fulfilment_kit.tracing import event_trace

__all__ = ["AGGREGATE_ID", "RECORDED_AT", "PublicEvents", "Source"]

AGGREGATE_ID = "originator_id"
"""The field of a domain event that is the id of its aggregate."""
RECORDED_AT = "timestamp"
"""The field of a domain event that is when it was recorded."""

Make = Callable[[Any], IntegrationEvent | None]
"""The public event of a domain event, or None: this one stays private."""

MakeT = TypeVar("MakeT", bound=Make)

Source = str | Callable[[Any], Any]
"""Where a public field's value comes from: the domain event's field of that name (e.g.
"originator_id", "timestamp"), or a function of the domain event."""


class PublicEvents:
    """Maps a service's domain events to the public events they publish (an `EventMapper`)."""

    def __init__(self) -> None:
        self._makers: dict[type[Any], Make] = {}
        self._topics: dict[str, bool] = {}

    def may_publish(self, topic: str) -> bool:
        """Whether a domain event of `topic` (its stored topic) may publish anything: False
        only for a class nothing is mapped for, so the relay skips it without decoding it.
        A topic that does not resolve says True (decoding it fails, and the relay
        quarantines it as before)."""
        known = self._topics.get(topic)
        if known is None:
            try:
                kind = resolve_topic(topic)
            except Exception:
                return True
            known = any(k in self._makers for k in getattr(kind, "__mro__", (kind,)))
            self._topics[topic] = known
        return known

    def __call__(self, domain_event: Any) -> Sequence[EventToPublish]:
        make = next(
            (self._makers[k] for k in type(domain_event).__mro__ if k in self._makers), None
        )
        public = None if make is None else make(domain_event)
        if public is None:
            return ()
        trace = event_trace(domain_event)
        return (EventToPublish(public, trace.correlation_id, trace.causation_id),)

    def register(self, kind: type[Any]) -> Callable[[MakeT], MakeT]:
        """Decorate the function that makes `kind`'s public event (None: it stays private)."""

        def add(make: MakeT) -> MakeT:
            if kind in self._makers:
                raise TypeError(f"{kind.__qualname__} is mapped twice")
            self._makers[kind] = make
            self._topics.clear()
            return make

        return add

    def copy(
        self,
        kind: type[Any],
        public: type[IntegrationEvent],
        same: str = "",
        *,
        when: Callable[[Any], bool] | None = None,
        **sources: Source,
    ) -> None:
        """`kind` publishes `public` (when `when` says so): the fields named in `same`
        (space-separated) from the domain event's fields of those names, each of `sources`
        from the field it names or the function of the domain event it is. Checked now: each
        field named is one of `public`'s and each field `public` requires is given."""
        spec: dict[str, Source] = {name: name for name in same.split()}
        spec.update(sources)
        unknown = sorted(spec.keys() - public.model_fields.keys())
        required = {name for name, field in public.model_fields.items() if field.is_required()}
        missing = sorted(required - spec.keys())
        if unknown or missing:
            raise TypeError(
                f"{kind.__qualname__} -> {public.__name__}: unknown fields {unknown}, "
                f"required fields not given {missing}"
            )

        def make(e: Any) -> IntegrationEvent | None:
            if when is not None and not when(e):
                return None
            values = {f: getattr(e, s) if isinstance(s, str) else s(e) for f, s in spec.items()}
            return public(**values)

        self.register(kind)(make)
