"""structlog JSON logging with context bound through contextvars."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Keys that may carry personal data; they are dropped from every log line.
_PERSONAL_KEYS = frozenset(
    {"email", "shipping_address", "address", "recipient_name", "payment_token", "card", "phone"}
)


def _drop_personal_data(_: Any, __: str, event_dict: structlog.types.EventDict) -> Any:
    for key in _PERSONAL_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    """Render every log line (ours and the libraries') as one JSON object on stdout."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_personal_data,
    ]
    structlog.configure(
        processors=[
            # First: a line below the level is dropped before anything renders it (the
            # services log per command; at WARNING, e.g. in the bench, none of it is kept).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "uvicorn.access", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.bind_contextvars(service=service)
