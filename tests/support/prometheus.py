"""A real Prometheus server (Debian's `prometheus`) scraping services started by a test."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.processes import REPO, free_port

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DEPLOYMENT = "e2e"
"""The `deployment` target label the test's scrape config sets (the dashboards filter on it)."""


class PrometheusServer:
    """Prometheus on a free port of 127.0.0.1, scraping `targets` (service -> host:port)."""

    def __init__(self, targets: Mapping[str, str], scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed (make prometheus-tools installs it)"
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = REPO / ".local" / "test-prometheus" / uuid.uuid4().hex[:10]
        self.dir.mkdir(parents=True)
        self.log_path = self.dir / "prometheus.log"
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": scrape_interval,
                        "scrape_timeout": scrape_interval,
                        "evaluation_interval": scrape_interval,
                    },
                    "rule_files": [str(RULES_DIR / "*.yml")],
                    "scrape_configs": [
                        {
                            "job_name": "fulfilment",
                            "honor_labels": True,
                            "static_configs": [
                                {
                                    "targets": [address],
                                    "labels": {"service": name, "deployment": DEPLOYMENT},
                                }
                                for name, address in targets.items()
                            ],
                        }
                    ],
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> PrometheusServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus not ready:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir / "data", ignore_errors=True)

    async def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a success, else an AssertionError with the error."""
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            reply = await client.get(f"/api/v1/{path}", params=params)
        body = reply.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=expr)
        result = data["result"]
        return result if isinstance(result, list) else [{"metric": {}, "value": result}]

    async def query_range(
        self, expr: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        data = await self.api("query_range", query=expr, start=start, end=end, step=step)
        return list(data["result"])


def substitute(expr: str, *, rate_interval: str, range_: str, deployment: str) -> str:
    """A panel's PromQL with Grafana's template variables replaced as Grafana would."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("$__range", range_)
        .replace("$deployment", deployment)
        .replace("${deployment}", deployment)
    )


def load_dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards' JSON by uid."""
    import json

    folder = REPO / "deploy" / "grafana" / "dashboards"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, legend format, PromQL) of every query of every panel (rows included)."""
    found = []
    for item in board.get("panels", []):
        for panel in [item, *item.get("panels", [])]:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append(
                        (panel.get("title", "?"), target.get("legendFormat", ""), target["expr"])
                    )
    return found


def alert_rules() -> list[dict[str, Any]]:
    rules = []
    for path in sorted(Path(RULES_DIR).glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(r for r in group["rules"] if "alert" in r)
    return rules
