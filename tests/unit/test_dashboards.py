"""Dashboards as code: the committed JSON and ConfigMaps are what the code generates."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[2]
GENERATOR = REPO / "deploy" / "grafana" / "dashboards.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fulfil_dashboards", GENERATOR)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_files_match_the_code() -> None:
    generator = _generator()
    drifted = [
        str(path.relative_to(REPO))
        for path, content in generator.rendered_files()
        if not path.exists() or path.read_text() != content
    ]
    assert not drifted, f"run `make dashboards`: {drifted}"
    assert generator.main(["--check"]) == 0


def test_four_dashboards_each_with_the_deployment_variable_and_filter() -> None:
    boards = _generator().all_dashboards()
    assert set(boards) == {
        "fulfilment-overview",
        "fulfilment-service-health",
        "fulfilment-event-pipeline",
        "fulfilment-customer-service",
    }
    for uid, board in boards.items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["deployment"]["type"] == "query", uid
        assert variables["datasource"]["type"] == "datasource", uid
        for panel in board["panels"]:
            for target in panel["targets"]:
                assert 'deployment=~"$deployment"' in target["expr"], (uid, panel["title"])
                assert target["datasource"]["uid"] == "${datasource}"


def test_configmaps_carry_the_dashboards_for_grafanas_sidecar() -> None:
    folder = REPO / "deploy" / "grafana" / "configmaps"
    maps = {p.stem: yaml.safe_load(p.read_text()) for p in folder.glob("*.yaml")}
    assert len(maps) == 4
    for uid, configmap in maps.items():
        assert configmap["kind"] == "ConfigMap"
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        committed = json.loads((REPO / "deploy/grafana/dashboards" / f"{uid}.json").read_text())
        assert json.loads(configmap["data"][f"{uid}.json"]) == committed
