"""`fulfil`: operator commands of customer-service.

fulfil projections rebuild NAME|all [--source topics|logs] [--dry-run] [--workers N]
fulfil projections compare NAME|all [--source topics|logs] [--workers N]
fulfil auth token --role ROLE [--role ROLE ...] [--sub SUBJECT] [--ttl SECONDS]   (dev only)
fulfil dlq list | show | replay | discard ...      (the kit's: fulfilment_kit.operator.cli)
fulfil consumers accept-gap CONSUMER TOPIC PARTITION --reason TEXT
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from customer_service.projections.rebuild import Mode, Rebuild, RebuildError, RebuildReport
from customer_service.projections.shards import ShardedTopics
from customer_service.projections.sources import LogSource, Source, TopicSource
from customer_service.projections.store import rebuild_datastore
from customer_service.projections.tables import PROJECTIONS, projection_names
from fulfilment_kit import devauth
from fulfilment_kit.http.auth import CUSTOMER, ROLES
from fulfilment_kit.operator import cli as operator_cli
from fulfilment_kit.settings import AuthSettings

console = Console(stderr=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fulfil", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)
    projections = groups.add_parser("projections", help="customer-service read models")
    commands = projections.add_subparsers(dest="command", required=True)
    names = [*PROJECTIONS, "all"]
    rebuild = commands.add_parser(
        "rebuild", help="rebuild into fresh shadow tables from the beginning, then swap them in"
    )
    compare = commands.add_parser(
        "compare", help="print the differences between the live tables and a fresh rebuild"
    )
    for command in (rebuild, compare):
        command.add_argument("name", choices=names, metavar="NAME|all", help=", ".join(names))
        command.add_argument(
            "--source",
            choices=["topics", "logs"],
            default="topics",
            help="the Kafka topics (default) or each service's GET /events (FULFIL_<SERVICE>_URL)",
        )
    rebuild.add_argument(
        "--dry-run", action="store_true", help="rebuild into the shadow tables, do not swap"
    )
    for command in (rebuild, compare):
        command.add_argument(
            "--workers",
            type=int,
            help="processes sharing the topics' partitions (default: one per "
            f"{EVENTS_PER_WORKER:,} records, at most the CPUs and {MAX_WORKERS}; 1 reads in "
            "this process, as it reads the logs)",
        )
    auth = groups.add_parser("auth", help="the dev issuer (local key pair, dev only)")
    auth_commands = auth.add_subparsers(dest="command", required=True)
    token = auth_commands.add_parser(
        "token", help="print a bearer token of the dev issuer (dev only: never in production)"
    )
    token.add_argument("--role", action="append", choices=ROLES, required=True)
    token.add_argument("--sub", help="the subject; a customer token's is the customer id")
    token.add_argument("--ttl", type=float, default=devauth.DEFAULT_TTL_S, help="seconds")
    operator_cli.add_commands(groups)
    return parser


def auth_token(roles: Sequence[str], sub: str | None, ttl_s: float) -> str:
    """A dev-issuer token; refuses when the services are configured with a real issuer."""
    settings = AuthSettings()
    if not settings.dev:
        raise RuntimeError("FULFIL_AUTH_JWKS_* is set: tokens come from the identity provider")
    if CUSTOMER in roles and sub is None:
        raise RuntimeError("a customer token needs --sub <customer-id>")
    return devauth.mint(roles, sub or f"dev-{'-'.join(roles)}", ttl_s=ttl_s, settings=settings)


MAX_WORKERS = 4
EVENTS_PER_WORKER = 5_000
"""Below this a worker's start (its Kafka and database connections, 30-60 ms) costs more than
it saves (13,800 events: 0.75-1.0 s with two workers, 1.0-1.3 s with one, the best runs of six
alternating; the collector paused, see pipeline.py)."""


def default_workers(records: int) -> int:
    """Workers for a rebuild of `records` records: parallel only where it pays."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1, records // EVENTS_PER_WORKER))


async def count_records() -> int:
    """The records the topics hold now (end minus beginning offsets of every partition)."""
    source = TopicSource()
    await source.open()
    try:
        return await source.total() or 0
    finally:
        await source.close()


def make_source(name: str, workers: int = 1) -> Source | ShardedTopics:
    """The source to rebuild from. Sharded workers are forked here, so call it before any
    connection or thread is opened."""
    if name != "topics":
        return LogSource()
    return ShardedTopics(workers) if workers > 1 else TopicSource()


async def run_rebuild(
    projections: Sequence[str], source: Source | ShardedTopics, mode: Mode
) -> RebuildReport:
    store = rebuild_datastore(2)  # the rebuild's lock, and its transactions
    try:
        with Progress(
            TextColumn(f"[bold]{mode} {', '.join(projections)} from {source.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal,  # redrawn 10 times a second: for people only
        ) as bar:
            task = bar.add_task("events", total=None)

            def progress(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            rebuild = Rebuild(store, projections, source, mode=mode, progress=progress)
            return await rebuild.run()
    finally:
        store.close()


def _print_report(report: RebuildReport) -> None:
    rate = (
        f"{report.events:,} events in {report.seconds:.2f} s ({report.events_per_s:,.0f} events/s)"
    )
    outcome = {"swap": "swapped in", "dry-run": "dry run, not swapped", "compare": "compared"}
    print(f"{', '.join(report.projections)} from {report.source}: {rate}; {outcome[report.mode]}")
    if report.duplicates or report.undecodable:
        print(
            f"  skipped {report.duplicates} duplicate and {report.undecodable} undecodable records"
        )
    for table, rows in report.rows.items():
        print(f"  {table}: {rows:,} rows")


def _print_differences(report: RebuildReport) -> None:
    for table, diff in report.differences.items():
        if diff.equal:
            print(f"  {table}: equal")
            continue
        print(
            f"  {table}: {diff.only_live} rows only live, {diff.only_rebuilt} only in the rebuild"
        )
        for label, rows in (("live", diff.samples_live), ("rebuild", diff.samples_rebuilt)):
            for row in rows:
                print(f"    {label}: {json.dumps(row, default=str, sort_keys=True)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.group == "auth":
        try:
            print(auth_token(args.role, args.sub, args.ttl))
        except RuntimeError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 1
        return 0
    if args.group in operator_cli.GROUPS:
        return operator_cli.run(args)
    projections = projection_names(args.name)
    mode: Mode = "compare" if args.command == "compare" else "dry-run" if args.dry_run else "swap"
    # What the imports made lives as long as the command: frozen, the collector's full passes
    # (one every few thousand events decoded) no longer walk it (a third of a rebuild's CPU).
    gc.freeze()
    if args.workers is not None and args.workers < 1:
        console.print("[red]error:[/red] --workers must be 1 or more")
        return 1
    try:
        workers = args.workers
        if workers is None and args.source == "topics":
            workers = default_workers(asyncio.run(count_records()))  # no thread left behind
        source = make_source(args.source, workers or 1)
        report = asyncio.run(run_rebuild(projections, source, mode))
    except (RebuildError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    _print_report(report)
    if mode == "compare":
        _print_differences(report)
        return 0 if report.equal else 2
    return 0


def entrypoint() -> Any:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
