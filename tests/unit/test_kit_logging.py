"""The kit's logging: JSON lines with the bound context; lines below the level dropped first."""

from __future__ import annotations

import json

import pytest
import structlog

from fulfilment_kit.observability.logging import configure_logging


def test_a_line_below_the_level_is_dropped_and_one_above_is_rendered_with_its_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("unit-logging", "WARNING")  # here: its handler takes the captured stdout
    try:
        log = structlog.get_logger("unit.logging")
        structlog.contextvars.bind_contextvars(correlation_id="corr-1")
        log.info("order placed", order_id="o-1")
        log.warning("stock low", sku="MUG-BLUE", email="ada@example.invalid")
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    finally:
        with capsys.disabled():  # the later tests' lines go to the real stdout again
            configure_logging("unit-logging", "INFO")
        structlog.contextvars.clear_contextvars()
    assert [line["event"] for line in lines] == ["stock low"]
    assert lines[0]["correlation_id"] == "corr-1"
    assert lines[0]["email"] == "[redacted]"
    assert lines[0]["service"] == "unit-logging"
