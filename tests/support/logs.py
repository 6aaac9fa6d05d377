"""Capture what the kit's modules log, whatever the suite configured before."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import structlog
from structlog.testing import capture_logs


@contextlib.contextmanager
def captured_logs(*modules: ModuleType) -> Iterator[list[dict[str, Any]]]:
    """structlog's capture_logs, with fresh loggers in `modules` for the duration.

    The kit configures `cache_logger_on_first_use`, so a module's logger that was used
    before (by an earlier test that configured logging) ignores capture_logs' processors."""
    saved = {module: module.log for module in modules}
    try:
        with capture_logs() as logs:
            for module in modules:
                module.log = structlog.get_logger(module.__name__)
            yield logs
    finally:
        for module, logger in saved.items():
            module.log = logger
