"""Create a service's tables and exit: the init step of a deployment.

    python -m fulfilment_kit.migrate orders.main:create_app

Building the service's app creates what it needs (the event store's tables with
eventsourcing's CREATE_TABLE, read-model tables where a service has them) and the kit's
follower tables (positions, followed items, relay quarantine); nothing is served and
Kafka is not contacted.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fulfilment_kit.persistence.follower import follower_store


def migrate(factory_path: str) -> None:
    """Call the app factory `module:function` once for its side effect of creating tables."""
    module_name, _, function = factory_path.partition(":")
    if not module_name or not function:
        raise SystemExit(f"expected module:function, got {factory_path!r}")
    factory: Callable[[], Any] = getattr(importlib.import_module(module_name), function)
    app = factory()
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    if runtime is not None:
        service_app = getattr(runtime, "app", None)  # a consume-only process has none
        if service_app is not None:
            follower_store(service_app).create_tables()
        runtime.close()
    print(f"migrated: {factory_path}")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m fulfilment_kit.migrate <module>:<app factory>")
    migrate(args[0])


if __name__ == "__main__":
    main()
