"""Classes moved to another module keep loading: stored events, snapshots and values name
their class by topic (`module:QualName`), so the topics of the old module stay resolvable.

`moved_from(old, *classes)` registers `old:QualName` for each class (nested event classes
resolve through their aggregate); `stored_topics(cls)` lists every topic events of `cls` may
be stored under (for filters on the notification log); `register_dataclasses` decodes values
stored under an old name too.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic, register_topic

_FORMER_MODULES: dict[str, list[str]] = {}
"""Module a class lives in now -> the modules it lived in before."""


def moved_from(old_module: str, *classes: type[Any]) -> None:
    """Let topics stored when `classes` lived in `old_module` resolve to them."""
    for cls in classes:
        register_topic(f"{old_module}:{cls.__qualname__}", cls)
        former = _FORMER_MODULES.setdefault(cls.__module__, [])
        if old_module not in former:
            former.append(old_module)


def former_topics(cls: type[Any]) -> list[str]:
    """The topics `cls` was stored under before it moved (none if it never did)."""
    return [f"{old}:{cls.__qualname__}" for old in _FORMER_MODULES.get(cls.__module__, [])]


def stored_topics(*classes: type[Any]) -> tuple[str, ...]:
    """Every topic events of `classes` may be stored under: the current and the former ones."""
    return tuple(t for cls in classes for t in (get_topic(cls), *former_topics(cls)))
