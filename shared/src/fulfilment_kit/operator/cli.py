"""`fulfil dlq ...` and `fulfil consumers ...`: the operator commands of the kit's consumers.

fulfil dlq list
fulfil dlq show CONSUMER [--limit N] [--all]
fulfil dlq replay CONSUMER (--id ID ... | --all) [--dry-run]
fulfil dlq discard CONSUMER --id ID ... --reason TEXT
fulfil consumers accept-gap CONSUMER TOPIC PARTITION --reason TEXT
fulfil privacy new-kek ID        (prints a KEK entry for FULFIL_PRIVACY_KEKS)
fulfil privacy rewrap            (after a KEK rotation: rewrap every data key, current KEK)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fulfilment_kit.operator import dlq
from fulfilment_kit.operator.consumers import OperatorError, accept_gap

GROUPS = ("dlq", "consumers", "privacy")
console = Console(stderr=True)


def add_commands(groups: Any) -> None:
    """Add the `dlq` and `consumers` command groups to a `fulfil` parser's subparsers."""
    letters = groups.add_parser("dlq", help="dead-letter topics: list, show, replay, discard")
    commands = letters.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="per consumer: open dead letters, the oldest, their reasons")
    show = commands.add_parser("show", help="dead letters of one consumer, personal data masked")
    show.add_argument("consumer")
    show.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    show.add_argument("--all", action="store_true", help="replayed and discarded ones too")
    replay = commands.add_parser(
        "replay", help="apply dead letters through the consumer's own inbox (at most once each)"
    )
    replay.add_argument("consumer")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", nargs="+", dest="ids", metavar="ID", help="these letters")
    which.add_argument("--all", action="store_true", help="every open letter of the consumer")
    replay.add_argument("--dry-run", action="store_true", help="say what would be applied")
    discard = commands.add_parser("discard", help="give dead letters up, with a reason (audited)")
    discard.add_argument("consumer")
    discard.add_argument("--id", nargs="+", dest="ids", metavar="ID", required=True)
    discard.add_argument("--reason", required=True)

    consumers = groups.add_parser("consumers", help="consumer positions")
    positions = consumers.add_subparsers(dest="command", required=True)
    gap = positions.add_parser(
        "accept-gap",
        help="resume a partition stopped at a retention gap from the log start (audited)",
    )
    gap.add_argument("consumer")
    gap.add_argument("topic", help="as in the error log (the deployment prefix is optional)")
    gap.add_argument("partition", type=int)
    gap.add_argument("--reason", required=True)
    privacy = groups.add_parser("privacy", help="key-encryption keys of the personal-data keys")
    keys = privacy.add_subparsers(dest="command", required=True)
    new_kek = keys.add_parser("new-kek", help="print a new KEK entry (keep it in a secret)")
    new_kek.add_argument("kek_id", metavar="ID")
    keys.add_parser("rewrap", help="rewrap every live data key under the first (current) KEK")


def run(args: argparse.Namespace) -> int:
    """Run a parsed `dlq`, `consumers` or `privacy` command; the process exit code."""
    if args.group == "privacy":
        return _privacy(args)
    try:
        return asyncio.run(_run(args))
    except OperatorError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1


async def _run(args: argparse.Namespace) -> int:
    if args.group == "consumers":
        outcome = await accept_gap(args.consumer, args.topic, args.partition, args.reason)
        if not outcome.accepted:
            print(
                f"{args.consumer} {args.topic}/{args.partition}: no gap (tracked "
                f"{outcome.tracked}, log start {outcome.log_start}); nothing changed"
            )
            return 0
        print(
            f"{args.consumer} {args.topic}/{args.partition}: gap accepted, {outcome.lost} records "
            f"given up (tracked {outcome.tracked} -> {outcome.log_start}); the consumer resumes"
        )
        return 0
    if args.command == "list":
        summaries = await dlq.summary()
        if not summaries:
            print("no dead letters")
        for s in summaries:
            reasons = ", ".join(f"{r} {n}" for r, n in s.reasons.most_common()) or "-"
            oldest = s.oldest or "-"
            print(
                f"{s.consumer}: {s.open} open (oldest {oldest}; {reasons}), {s.resolved} resolved"
            )
        return 0
    if args.command == "show":
        done = await dlq.resolutions()
        found = [x for x in await dlq.letters(args.consumer) if x.consumer == args.consumer]
        if not args.all:
            found = [x for x in found if (args.consumer, x.id) not in done]
        for letter in found[: args.limit]:
            entry = dlq.shown(letter)
            resolution = done.get((args.consumer, letter.id))
            if resolution is not None:
                entry["resolution"] = vars(resolution)
            print(json.dumps(entry, indent=2, sort_keys=True, default=str))
        print(f"{min(len(found), args.limit)} of {len(found)} shown")
        return 0
    if args.command == "discard":
        ids = await dlq.discard(args.consumer, args.ids, args.reason)
        print(f"discarded {len(ids)}: {', '.join(ids)} (reason recorded on the audit topic)")
        return 0
    return await _replay(args)


async def _replay(args: argparse.Namespace) -> int:
    with Progress(
        TextColumn(f"[bold]replay {args.consumer}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("letters", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = await dlq.replay(
            args.consumer, args.ids or (), dry_run=args.dry_run, progress=progress
        )
    for letter_id, outcome in report.outcomes:
        print(f"  {letter_id}: {outcome}")
    if args.dry_run:
        print(
            f"dry run: would apply {report.would_apply}, already applied "
            f"{report.already_applied}, discarded {report.skipped_discarded}"
        )
        return 0
    if not report.outcomes:
        print("nothing to replay: no open dead letters")
    print(
        f"applied {report.applied}, still failing {report.still_failing}, "
        f"already applied {report.already_applied}, discarded {report.skipped_discarded}"
    )
    return 2 if report.still_failing else 0


def _privacy(args: argparse.Namespace) -> int:
    from fulfilment_kit.privacy import open_vault
    from fulfilment_kit.privacy.keys import generate_kek

    if args.command == "new-kek":
        print(generate_kek(args.kek_id))
        return 0
    vault = open_vault("customer-service")
    try:
        done = vault.rewrap()
    finally:
        vault.close()
    print(f"rewrapped {done} data keys under KEK {vault.keks.current!r}")
    return 0
