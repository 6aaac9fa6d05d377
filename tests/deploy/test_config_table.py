"""README.md's configuration table is generated from the settings classes, and the services
read their environment through those classes only."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("config_table", REPO / "deploy/config_table.py")
assert _spec is not None
assert _spec.loader is not None
config_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(config_table)

ENVIRONMENT_READ = re.compile(r"os\.environ|os\.getenv|getenv\(")
# Read outside a settings class on purpose: the topic prefix per record (a settings object
# per record would cost the relay), the state directory the settings' defaults derive from,
# and the operator CLI's --prefix default.
KIT_DIRECT_READS = {"contracts/topics.py", "settings.py", "messaging/security.py"}


def test_the_readme_table_is_the_generated_one() -> None:
    readme = (REPO / "README.md").read_text()
    assert readme == config_table.rendered(readme), "run: make config-table"


def test_every_setting_has_a_meaning_and_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FULFIL_STATE_DIR", raising=False)
    rows = [line for line in config_table.table().splitlines() if line.startswith("| `")]
    names = [row.split("`")[1] for row in rows]
    assert len(names) == len(set(names)), "a variable read by two settings fields"
    assert "FULFIL_ORDERS_DEADLINE_PAID_S" in names
    assert "FULFIL_INVENTORY_DEFAULT_THRESHOLD" in names
    assert all(row.split(" | ")[2].strip(" |") for row in rows)


def test_services_read_the_environment_through_their_settings_classes_only() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "services").glob("*/src/**/*.py"))
        if ENVIRONMENT_READ.search(path.read_text())
    ]
    kit = REPO / "shared/src/fulfilment_kit"
    offenders += [
        str(path.relative_to(REPO))
        for path in sorted(kit.rglob("*.py"))
        if str(path.relative_to(kit)) not in KIT_DIRECT_READS
        and ENVIRONMENT_READ.search(path.read_text())
    ]
    assert offenders == []
