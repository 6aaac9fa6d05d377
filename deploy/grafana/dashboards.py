"""The platform's Grafana dashboards as code (grafana-foundation-sdk typed builders).

`make dashboards` writes the JSON to deploy/grafana/dashboards/ and the same dashboards as
Kubernetes ConfigMaps (label grafana_dashboard: "1", for Grafana's sidecar) to
deploy/grafana/configmaps/; `--check` fails when a committed file differs from the code.

Every query filters on the `deployment` label (the scrape config sets it: the topic prefix
or the Kubernetes namespace) through the dashboard variable of the same name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

HERE = Path(__file__).resolve().parent
JSON_DIR = HERE / "dashboards"
CONFIGMAP_DIR = HERE / "configmaps"
FOLDER = "Fulfilment"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
D = 'deployment=~"$deployment"'
"""The deployment filter every selector carries."""
W = "$__rate_interval"
R = "$__range"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: str  # timeseries | stat | bargauge | table
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    width: int = 8
    height: int = 8


def q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def panel(
    title: str,
    *queries: Query,
    kind: str = "timeseries",
    unit: str = "short",
    description: str = "",
    width: int = 8,
) -> PanelSpec:
    return PanelSpec(title, kind, queries, unit, description, width)


def no_errors_as_zero(errors: str, total: str) -> str:
    """`errors / total` that is 0 (not empty) while there are no errors."""
    return f"(({errors}) or ({total}) * 0) / ({total})"


# --- the four dashboards --------------------------------------------------------------

OVERVIEW = (
    "fulfilment-overview",
    "Fulfilment overview",
    "Orders, money and stuck orders across the platform",
    [
        panel(
            "Orders/s by outcome",
            q(f"sum by (outcome) (rate(fulfil_orders_total{{{D}}}[{W}]))", "{{outcome}}"),
            unit="reqps",
        ),
        panel(
            "Lifecycle funnel",
            q(
                "sum by (outcome) (increase(fulfil_orders_total"
                f'{{{D}, outcome=~"placed|stock_locked|paid|shipped|delivered"}}[{R}]))',
                "{{outcome}}",
            ),
            kind="bargauge",
            description="Orders reaching each step in the time range (placed to delivered).",
        ),
        panel(
            "Orders ended badly",
            q(
                "sum by (outcome) (increase(fulfil_orders_total"
                f'{{{D}, outcome=~"rejected|cancelled"}}[{R}]))',
                "{{outcome}}",
            ),
            q(
                f"sum by (reason) (increase(fulfil_orders_rejected_total{{{D}}}[{R}]))",
                "{{reason}}",
            ),
            kind="bargauge",
        ),
        panel(
            "GMV by currency",
            q(
                f"sum by (currency) (increase(fulfil_paid_order_value_minor_sum{{{D}}}[{R}]))"
                " / 100",
                "{{currency}}",
            ),
            kind="stat",
            unit="none",
            description="Paid order value in the time range, in major units "
            "(2-decimal currencies).",
        ),
        panel(
            "Average order value",
            q(
                f"sum by (currency) (increase(fulfil_paid_order_value_minor_sum{{{D}}}[{R}]))"
                f" / sum by (currency) (increase(fulfil_paid_order_value_minor_count{{{D}}}[{R}]))"
                " / 100",
                "{{currency}}",
            ),
            kind="stat",
            unit="none",
        ),
        panel(
            "Return rate",
            q(
                "sum(increase(fulfil_orders_total"
                f'{{{D}, outcome=~"returned|partially_returned"}}[{R}]))'
                " / clamp_min(sum(increase(fulfil_orders_total"
                f'{{{D}, outcome="delivered"}}[{R}])), 1)',
                "returned / delivered",
            ),
            kind="stat",
            unit="percentunit",
        ),
        panel(
            "Stuck orders now (past their stage deadline)",
            # every replica counts the same table: max, not sum, across them
            q(f"max by (stage) (fulfil_orders_overdue{{{D}}})", "{{stage}}"),
            description="Run `fulfil` against orders: GET /orders?flagged=true lists them.",
        ),
        panel(
            "Orders flagged by stage",
            q(f"sum by (stage) (increase(fulfil_orders_flagged_total{{{D}}}[{R}]))", "{{stage}}"),
            kind="bargauge",
        ),
        panel(
            "Time in stage (p90)",
            q(
                "histogram_quantile(0.9, sum by (stage, le) "
                f"(rate(fulfil_order_stage_seconds_bucket{{{D}}}[{W}])))",
                "{{stage}}",
            ),
            unit="s",
            description="placed = until stock locked, stock_locked = until paid, "
            "paid = until shipped, shipped = until delivered.",
        ),
        panel(
            "Payment outcomes by code",
            q(
                f"sum by (outcome, code) (rate(fulfil_payment_outcomes_total{{{D}}}[{W}]))",
                "{{outcome}} {{code}}",
            ),
            unit="reqps",
        ),
        panel(
            "Refunds by currency and reason",
            q(
                f"sum by (currency, reason) (increase(fulfil_refunds_minor_total{{{D}}}[{R}]))"
                " / 100",
                "{{currency}} {{reason}}",
            ),
            kind="bargauge",
            unit="none",
        ),
        panel(
            "Low-stock SKUs",
            # every replica samples the same database: max, not sum, across them
            q(f"max(fulfil_stock_low_skus{{{D}}})", "SKUs at or below threshold"),
            kind="stat",
            description="GET /stock?below_threshold=true on inventory names them.",
        ),
        panel(
            "Stock reservations by outcome",
            q(
                f"sum by (outcome) (rate(fulfil_stock_reservations_total{{{D}}}[{W}]))",
                "{{outcome}}",
            ),
            unit="reqps",
        ),
        panel(
            "Shipments by outcome",
            q(f"sum by (outcome) (rate(fulfil_shipments_total{{{D}}}[{W}]))", "{{outcome}}"),
            unit="reqps",
        ),
    ],
)

SERVICE_HEALTH = (
    "fulfilment-service-health",
    "Service health",
    "RED per service, readiness, restarts, CPU and memory",
    [
        panel(
            "Requests/s by service",
            q(f"sum by (service) (rate(fulfil_http_requests_total{{{D}}}[{W}]))", "{{service}}"),
            unit="reqps",
        ),
        panel(
            "5xx ratio by service",
            q(
                no_errors_as_zero(
                    "sum by (service) (rate(fulfil_http_requests_total"
                    f'{{{D}, status=~"5.."}}[{W}]))',
                    f"sum by (service) (rate(fulfil_http_requests_total{{{D}}}[{W}]))",
                ),
                "{{service}}",
            ),
            unit="percentunit",
        ),
        panel(
            "p99 latency by service",
            q(
                "histogram_quantile(0.99, sum by (service, le) "
                f"(rate(fulfil_http_request_duration_seconds_bucket{{{D}}}[{W}])))",
                "{{service}}",
            ),
            unit="s",
        ),
        panel(
            "p99 latency by route",
            q(
                "histogram_quantile(0.99, sum by (service, method, route, le) "
                f"(rate(fulfil_http_request_duration_seconds_bucket{{{D}}}[{W}])))",
                "{{service}} {{method}} {{route}}",
            ),
            unit="s",
            width=12,
        ),
        panel(
            "Requests/s by route and status",
            q(
                "sum by (service, method, route, status) "
                f"(rate(fulfil_http_requests_total{{{D}}}[{W}]))",
                "{{service}} {{method}} {{route}} {{status}}",
            ),
            unit="reqps",
            width=12,
        ),
        panel(
            "Ready (1) / not ready (0)",
            q(f"min by (service) (fulfil_ready{{{D}}})", "{{service}}"),
            description="What /readyz answers; fulfil_readiness_problem names the failing check.",
        ),
        panel(
            "Scrape up",
            q(f'min by (service) (up{{{D}, job="fulfilment"}})', "{{service}}"),
        ),
        panel(
            "Restarts in range",
            q(
                f"sum by (service) (changes(process_start_time_seconds{{{D}}}[{R}]))",
                "{{service}}",
            ),
            kind="bargauge",
        ),
        panel(
            "CPU (cores)",
            q(f"sum by (service) (rate(process_cpu_seconds_total{{{D}}}[{W}]))", "{{service}}"),
            unit="none",
        ),
        panel(
            "Resident memory",
            q(f"sum by (service) (process_resident_memory_bytes{{{D}}})", "{{service}}"),
            unit="bytes",
        ),
        panel(
            "Requests in flight",
            q(f"sum by (service) (fulfil_http_requests_in_flight{{{D}}})", "{{service}}"),
        ),
        panel(
            "Build",
            q(f"max by (service, version, revision) (fulfil_build_info{{{D}}})", ""),
            kind="table",
        ),
    ],
)

PIPELINE = (
    "fulfilment-event-pipeline",
    "Event pipeline",
    "Outbox relays, consumers, lag and dead letters",
    [
        panel(
            "Relay lag (events)",
            q(f"max by (service) (fulfil_relay_lag_events{{{D}}})", "{{service}}"),
            description="Committed, not yet published. Runbook: relay lag.",
        ),
        panel(
            "Relay lag (age of oldest unpublished event)",
            q(f"max by (service) (fulfil_relay_lag_seconds{{{D}}})", "{{service}}"),
            unit="s",
        ),
        panel(
            "Published records/s by topic",
            q(f"sum by (topic) (rate(fulfil_relay_published_total{{{D}}}[{W}]))", "{{topic}}"),
            unit="reqps",
        ),
        panel(
            "Consumer lag by group and topic (records)",
            q(
                f"sum by (consumer, topic) (fulfil_consumer_lag_records{{{D}}})",
                "{{consumer}} {{topic}}",
            ),
            width=12,
        ),
        panel(
            "Tracked offset behind high-water (incl. transaction markers)",
            q(
                f"sum by (consumer, topic) (fulfil_inbox_tracked_offset_lag{{{D}}})",
                "{{consumer}} {{topic}}",
            ),
            description="Transactional producers leave a commit marker after each batch, "
            "never tracked: one or two per partition at rest is normal; growth is not.",
            width=12,
        ),
        panel(
            "Applied records/s by topic",
            q(f"sum by (topic) (rate(fulfil_inbox_applied_total{{{D}}}[{W}]))", "{{topic}}"),
            unit="reqps",
        ),
        panel(
            "Dead-lettered records by consumer and reason",
            q(
                f"sum by (consumer, reason) (increase(fulfil_dlq_published_total{{{D}}}[{R}]))",
                "{{consumer}} {{reason}}",
            ),
            kind="bargauge",
            description="`fulfil dlq list` shows them; `fulfil dlq replay` sends them back.",
        ),
        panel(
            "Consumer retries/s",
            q(
                f"sum by (consumer, kind) (rate(fulfil_inbox_retries_total{{{D}}}[{W}]))",
                "{{consumer}} {{kind}}",
            ),
            unit="reqps",
        ),
        panel(
            "Redelivered duplicates/s",
            q(
                f"sum by (consumer) (rate(fulfil_inbox_duplicates_total{{{D}}}[{W}]))",
                "{{consumer}}",
            ),
            unit="reqps",
        ),
        panel(
            "Relay batch p99",
            q(
                "histogram_quantile(0.99, sum by (service, le) "
                f"(rate(fulfil_relay_batch_seconds_bucket{{{D}}}[{W}])))",
                "{{service}}",
            ),
            unit="s",
        ),
        panel(
            "Inbox batch p99",
            q(
                "histogram_quantile(0.99, sum by (consumer, le) "
                f"(rate(fulfil_inbox_batch_seconds_bucket{{{D}}}[{W}])))",
                "{{consumer}}",
            ),
            unit="s",
        ),
        panel(
            "Relay restarts in range",
            q(
                f"sum by (service) (increase(fulfil_relay_restarts_total{{{D}}}[{R}]))",
                "{{service}}",
            ),
            kind="bargauge",
        ),
    ],
)

CUSTOMER_SERVICE = (
    "fulfilment-customer-service",
    "Customer service",
    "Cases, SLAs and returns",
    [
        panel(
            "Open cases by priority",
            # every replica samples the same database: max, not sum, across them
            q(f"max by (priority) (fulfil_cases_open{{{D}}})", "{{priority}}"),
        ),
        panel(
            "Cases opened by priority",
            q(
                f"sum by (priority) (increase(fulfil_cases_opened_total{{{D}}}[{R}]))",
                "{{priority}}",
            ),
            kind="bargauge",
        ),
        panel(
            "SLA breaches by priority",
            q(
                f"sum by (priority, sla) (increase(fulfil_case_sla_breaches_total{{{D}}}[{R}]))",
                "{{priority}} {{sla}}",
            ),
            kind="bargauge",
        ),
        panel(
            "Returns requested by reason",
            q(
                "sum by (reason) (increase(fulfil_returns_total"
                f'{{{D}, outcome="requested"}}[{R}]))',
                "{{reason}}",
            ),
            kind="bargauge",
        ),
        panel(
            "Returns by outcome",
            q(f"sum by (outcome) (increase(fulfil_returns_total{{{D}}}[{R}]))", "{{outcome}}"),
            kind="bargauge",
        ),
        panel(
            "Time to first response (p90)",
            q(
                "histogram_quantile(0.9, sum by (priority, le) "
                f"(increase(fulfil_case_first_response_seconds_bucket{{{D}}}[{R}])))",
                "{{priority}}",
            ),
            kind="stat",
            unit="s",
        ),
        panel(
            "Refunds for received returns",
            q(
                "sum by (currency) (increase(fulfil_refunds_minor_total"
                f'{{{D}, reason="return_received"}}[{R}])) / 100',
                "{{currency}}",
            ),
            kind="stat",
            unit="none",
        ),
    ],
)

DASHBOARDS = (OVERVIEW, SERVICE_HEALTH, PIPELINE, CUSTOMER_SERVICE)


# --- building -------------------------------------------------------------------------


def _target(query: Query, ref: str) -> prom.Dataquery:
    target = prom.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
    return target.legend_format(query.legend) if query.legend else target


def _panel(spec: PanelSpec) -> Any:
    builder: Any
    if spec.kind == "timeseries":
        builder = timeseries.Panel()
    elif spec.kind == "stat":
        builder = stat.Panel()
    elif spec.kind == "bargauge":
        builder = bargauge.Panel()
    elif spec.kind == "table":
        builder = table.Panel()
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    builder = (
        builder.title(spec.title)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.description:
        builder = builder.description(spec.description)
    for index, query in enumerate(spec.queries):
        builder = builder.with_target(_target(query, chr(ord("A") + index)))
    return builder


def build(uid: str, title: str, description: str, panels: list[PanelSpec]) -> dict[str, Any]:
    """One dashboard as Grafana JSON (a dict)."""
    board = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["fulfilment"])
        .timezone("utc")
        .time("now-1h", "now")
        .refresh("30s")
        .editable()
        .with_variable(
            dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dash.QueryVariable("deployment")
            .label("Deployment")
            .description("Topic prefix or Kubernetes namespace of one platform deployment")
            .datasource(DATASOURCE)
            .query("label_values(fulfil_build_info, deployment)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
        )
    )
    for spec in panels:
        board = board.with_panel(_panel(spec))
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def all_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON by its uid."""
    return {uid: build(uid, title, about, panels) for uid, title, about, panels in DASHBOARDS}


def configmap(uid: str, board: dict[str, Any]) -> dict[str, Any]:
    """The dashboard as a ConfigMap Grafana's sidecar loads (label grafana_dashboard: "1")."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"grafana-dashboard-{uid}",
            "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "fulfilment"},
            "annotations": {"grafana_folder": FOLDER},
        },
        "data": {f"{uid}.json": _dumps(board)},
    }


def _dumps(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True) + "\n"


class _BlockDumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML ships no types
    """Writes multi-line strings (the dashboard JSON) as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def rendered_files() -> Iterator[tuple[Path, str]]:
    """(path, content) of every generated file."""
    for uid, board in all_dashboards().items():
        yield JSON_DIR / f"{uid}.json", _dumps(board)
        yield (
            CONFIGMAP_DIR / f"{uid}.yaml",
            yaml.dump(configmap(uid, board), Dumper=_BlockDumper, sort_keys=False, width=1000),
        )


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel of a dashboard JSON."""
    for item in board.get("panels", []):
        for sub in [item, *item.get("panels", [])]:
            for target in sub.get("targets", []):
                if target.get("expr"):
                    yield sub.get("title", "?"), target["expr"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a committed file drifted")
    check = parser.parse_args(argv).check
    drifted = []
    wanted = dict(rendered_files())
    for path, content in wanted.items():
        if check:
            if not path.exists() or path.read_text() != content:
                drifted.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for folder in (JSON_DIR, CONFIGMAP_DIR):
        for stale in folder.glob("*"):
            if stale not in wanted and stale.suffix in (".json", ".yaml"):
                if check:
                    drifted.append(stale)
                else:
                    stale.unlink()
    if drifted:
        names = ", ".join(str(p.relative_to(HERE)) for p in drifted)
        print(
            f"dashboards drifted from deploy/grafana/dashboards.py: {names} (run make dashboards)"
        )
        return 1
    if not check:
        print(f"wrote {len(wanted)} files under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
