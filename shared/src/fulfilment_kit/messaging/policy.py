"""Declarative policies: each handler of a process application says once which public events
it reacts to (`@policy(StockLocked)`); the kit derives from that what the application reacts
to (`reacts_to`), the aggregates to prefetch for a batch, and the topics to subscribe to."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from uuid import UUID

from fulfilment_kit.contracts import topics
from fulfilment_kit.contracts.base import IntegrationEvent
from fulfilment_kit.contracts.registry import EVENT_TYPES


class Prefetch(Protocol):
    """The ids of the aggregates a handler will load for an event (one query a batch)."""

    def __call__(self, event: Any, /) -> Iterable[UUID]: ...


class PrefetchThen(Protocol):
    """The ids of further aggregates a handler will load, found from those prefetched (e.g.
    the stock items of the order's reservation): one more query a batch, not one a record."""

    def __call__(self, event: Any, loaded: Mapping[UUID, Any], /) -> Iterable[UUID]: ...


THandler = TypeVar("THandler", bound=Callable[..., Any])


@dataclass(frozen=True)
class Reaction:
    """What one handler reacts to, and which aggregates it loads (None: the class default)."""

    event_types: tuple[type[IntegrationEvent], ...]
    handler: Callable[..., Any]
    prefetch: Prefetch | None = None
    prefetch_then: PrefetchThen | None = None


def policy(
    *event_types: type[IntegrationEvent],
    prefetch: Prefetch | None = None,
    prefetch_then: PrefetchThen | None = None,
) -> Callable[[THandler], THandler]:
    """Mark a method of a ProcessApplication as its reaction to `event_types`; `prefetch`
    and `prefetch_then` name what it loads (only a hint: what is not prefetched is loaded
    when asked for)."""
    if not event_types:
        raise TypeError("@policy needs the event types the handler reacts to")

    def mark(handler: THandler) -> THandler:
        reaction = Reaction(event_types, handler, prefetch, prefetch_then)
        handler.__policy__ = reaction  # type: ignore[attr-defined]
        return handler

    return mark


def reactions_of(cls: type) -> dict[type[IntegrationEvent], Reaction]:
    """Each event type `cls` reacts to, with its handler (a subclass's handler wins)."""
    found: dict[type[IntegrationEvent], Reaction] = {}
    for klass in reversed(cls.__mro__):
        own: dict[type[IntegrationEvent], Reaction] = {}
        for value in vars(klass).values():
            reaction = getattr(value, "__policy__", None)
            if not isinstance(reaction, Reaction):
                continue
            for event_type in reaction.event_types:
                if event_type in own:
                    raise TypeError(f"{klass.__name__} reacts to {event_type.__name__} twice")
                own[event_type] = reaction
        found.update(own)
    return found


def _the_order(order_id: UUID) -> UUID:
    return order_id


@dataclass(frozen=True)
class by_order:  # used like a function: `prefetch = by_order(payment_id_for)`
    """Prefetch the aggregate of the event's order: `aggregate_id(event.order_id)` (by
    default the aggregate whose id is the order id)."""

    aggregate_id: Callable[[UUID], UUID] = _the_order

    def __call__(self, event: Any) -> list[UUID]:
        order_id = getattr(event, "order_id", None)
        return [self.aggregate_id(order_id)] if isinstance(order_id, UUID) else []


def subscriptions_of(applier: object) -> tuple[str, ...]:
    """The topics a consumer subscribes to: those that carry what its policies react to (an
    applier without policies, e.g. the read models, sees every public event: every topic)."""
    reacts_to = getattr(applier, "reacts_to", ()) or tuple(EVENT_TYPES.values())
    return topics.sources_of(reacts_to)


def check_subscription(
    group_id: str, reacts_to: Sequence[type[IntegrationEvent]], subscribed: Sequence[str]
) -> None:
    """Refuse a subscription to a topic none of the consumer's policies react to."""
    idle = sorted(set(subscribed) - set(topics.sources_of(reacts_to)))
    if idle:
        raise ValueError(
            f"consumer {group_id} would subscribe to {idle}, which carry none of the events "
            "its policies react to"
        )
