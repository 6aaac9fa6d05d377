"""`python -m bench.compare` (`make bench-compare`): one benchmark run on two variants of the
platform, alternately, in the same session on the same stack, and their medians and ratios.

    python -m bench.compare --base main               # BASE (a git ref) vs the working tree
    python -m bench.compare --replicas 2              # 1 replica of each process vs 2
    python -m bench.compare --base main --replicas 2  # BASE vs working tree, 2 replicas each

BASE is checked out into a temporary git worktree (`.local/bench-compare/worktree-<sha>`)
with its own `uv sync --locked --compile-bytecode` venv. Every run is this checkout's
`python -m bench` (the same driver and measurements, whatever BASE's bench code could do)
started on BASE's services with `--platform-root <worktree>`: processes that only one side
has (e.g. the read models' own process) are listed, and figures one side cannot give (e.g.
BASE without the rebuild command) show as `-` with the reason in the run's warnings.

Rounds alternate A B, B A, A B, ... (same seed, same order mix, a fresh platform per run).
The ratio is B / A of the medians; whether higher or lower is better is said per figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __main__ as bench_cli
from .figures import FIGURES, alternation, medians, ratio
from .platform import REPO, processes_of
from .report import RESULTS_DIR, num, render

WORK_DIR = REPO / ".local" / "bench-compare"


@dataclass
class Variant:
    label: str
    root: Path
    args: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # headlines of good runs
    failures: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(f"[bench-compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The comparison's own options, and the options passed on to every `python -m bench`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Any other option goes to every run of `python -m bench` (e.g. --concurrency 16).",
    )
    parser.add_argument("--base", help="git ref of the base (A); B is the working tree")
    parser.add_argument(
        "--replicas",
        type=int,
        help="without --base: A = 1 replica of each process, B = this many; with --base:"
        " both sides run this many",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (3)")
    parser.add_argument("--orders", type=int, default=400, help="orders per run (400)")
    parser.add_argument("--seed", type=int, default=1, help="order mix seed, the same for all (1)")
    parser.add_argument(
        "--rate", type=float, help="also a paced run at this many orders/s in every run"
    )
    parser.add_argument(
        "--idle-s", type=float, default=10, help="idle window of every run, seconds (10)"
    )
    parser.add_argument(
        "--keep-worktree", action="store_true", help="keep BASE's worktree (and venv) for reuse"
    )
    args, passthrough = parser.parse_known_args(argv)
    if args.base is None and args.replicas is None:
        parser.error("say what to compare: --base REF and/or --replicas N")
    if args.base is None and args.replicas is not None and args.replicas < 2:
        parser.error("--replicas without --base compares 1 replica against N: N must be >= 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for reserved in ("--platform-root", "--json-out", "--replicas", "--profile"):
        if any(a == reserved or a.startswith(reserved + "=") for a in passthrough):
            parser.error(f"{reserved} is set by the comparison itself")
    try:  # the bench must accept them before an hour is spent (it exits 2 otherwise)
        bench_cli.parse_args(bench_command(args, passthrough, REPO, [], Path("x"))[3:])
    except SystemExit:
        parser.error("the options passed on to `python -m bench` are not valid (see above)")
    return args, passthrough


def bench_command(
    args: argparse.Namespace, passthrough: list[str], root: Path, extra: list[str], out: Path
) -> list[str]:
    """The `python -m bench` command line of one run."""
    command = [sys.executable, "-m", "bench", "--skip-ceilings"]
    command += ["--orders", str(args.orders), "--seed", str(args.seed)]
    command += ["--idle-s", f"{args.idle_s:g}"]
    if args.rate is not None:
        command += ["--rate", f"{args.rate:g}"]
    command += ["--platform-root", str(root), "--json-out", str(out), *extra, *passthrough]
    return command


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        raise RuntimeError("uv not found (make install installs it)")
    return found


def base_worktree(ref: str) -> tuple[Path, str]:
    """BASE checked out (detached) with its own venv; (path, short commit)."""
    try:
        commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"--base {ref!r} is not a commit here: {exc.stderr.strip()}") from exc
    short = commit[:10]
    path = WORK_DIR / f"worktree-{short}"
    if not (path / ".git").exists():
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        git("worktree", "prune")
        say(f"checking out {ref} ({short}) into {path}")
        git("worktree", "add", "--detach", str(path), commit)
    say(f"uv sync --locked --compile-bytecode in {path}")
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    subprocess.run(
        [uv(), "sync", "--locked", "--compile-bytecode", "--quiet"], cwd=path, env=env, check=True
    )
    return path, short


def remove_worktree(path: Path) -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        git("worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(subprocess.CalledProcessError):
        git("worktree", "prune")


def variants_for(args: argparse.Namespace) -> tuple[list[Variant], Path | None]:
    """The two variants (A first), and BASE's worktree when there is one."""
    head = bench_cli.revision()
    if args.base is None:
        n = args.replicas
        return [
            Variant(f"1 replica of each process ({head})", REPO, ["--replicas", "1"]),
            Variant(f"{n} replicas of each process ({head})", REPO, ["--replicas", str(n)]),
        ], None
    worktree, short = base_worktree(args.base)
    extra = ["--replicas", str(args.replicas)] if args.replicas else []
    suffix = f", {args.replicas} replicas each" if args.replicas else ""
    return [
        Variant(f"base {args.base} ({short}){suffix}", worktree, extra),
        Variant(f"working tree ({head}){suffix}", REPO, extra),
    ], worktree


def run_once(command: list[str], out: Path, log: Path) -> tuple[dict[str, Any] | None, str]:
    """One bench run: (its result, '') when it has figures, else (None, why not). A run
    with figures and problems (a POST failed, an order never shipped) counts, and its
    problems are noted under the table: on a shared machine a rare failed request should
    not void a round, and the reader sees it."""
    with log.open("w") as stdout:
        proc = subprocess.Popen(command, cwd=REPO, stdout=stdout)
        try:
            status = proc.wait()
        except KeyboardInterrupt:
            proc.wait()  # the run got the Ctrl-C too and tears its platform down
            raise
    if not out.exists():
        return None, f"exit {status}, no result (table: {log})"
    result: dict[str, Any] = json.loads(out.read_text())
    if "headline" not in result:
        return None, f"exit {status}: {'; '.join(result.get('problems') or [])[:300]}"
    return result, ""


def comparison_rows(a: Variant, b: Variant) -> list[dict[str, Any]]:
    """One row per figure: label, A and B medians, B/A, which way is better, the runs."""
    med_a, med_b = medians(a.runs), medians(b.runs)
    rows = []
    figures = [(f.key, f.label, f.higher_is_better) for f in FIGURES]
    processes: dict[str, None] = {}
    for run in (*a.runs, *b.runs):
        processes.update({k: None for k in run if k.startswith("rss_mib:")})
    figures += [
        (k, f"peak RSS MiB, {k.split(':', 1)[1]} (highest replica)", False) for k in processes
    ]
    for key, label, higher in figures:
        if med_a.get(key) is None and med_b.get(key) is None:
            continue
        rows.append(
            {
                "figure": key,
                "label": label,
                "a": med_a.get(key),
                "b": med_b.get(key),
                "ratio": ratio(med_b.get(key), med_a.get(key)),
                "better": "higher" if higher else "lower",
                "a_runs": [run.get(key) for run in a.runs],
                "b_runs": [run.get(key) for run in b.runs],
            }
        )
    return rows


def digits(key: str) -> int:
    return 0 if key.endswith("_ms") or key.startswith("rss") or key.startswith("rebuild") else 1


def render_comparison(summary: dict[str, Any]) -> str:
    a, b = summary["variants"]
    lines: list[tuple[str, ...] | str] = [
        f"bench-compare  {summary['date']}",
        f"command: {summary['command']}",
        f"A = {a['label']}: {a['root']}",
        f"B = {b['label']}: {b['root']}",
        f"{summary['rounds']} rounds, alternating (A B, B A, ...), {summary['orders']} orders per"
        f" run, seed {summary['seed']}, one stack; medians of the good runs, ratio = B / A",
        "",
        ("figure", "A median", "B median", "B/A", "better", "A runs", "B runs"),
    ]
    for row in summary["rows"]:
        d = digits(row["figure"])
        lines.append(
            (
                row["label"],
                num(row["a"], d),
                num(row["b"], d),
                num(row["ratio"], 2),
                row["better"],
                " / ".join(num(v, d) for v in row["a_runs"]),
                " / ".join(num(v, d) for v in row["b_runs"]),
            )
        )
    notes = summary.get("notes") or []
    if notes:
        lines += ["", "NOTES"] + [f"  - {n}" for n in notes]
    return render(lines)


def run(argv: list[str] | None = None) -> int:
    args, passthrough = parse_args(argv)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    out_dir = WORK_DIR / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    variants, worktree = variants_for(args)
    notes: list[str] = []
    if args.rounds < 3:
        notes.append(f"only {args.rounds} round(s): medians of fewer than 3 runs are noisy")
    only = {
        v.label: set(processes_of(v.root)) - set(processes_of(w.root))
        for v, w in ((variants[0], variants[1]), (variants[1], variants[0]))
    }
    for label, extra in only.items():
        if extra:
            notes.append(
                f"only {label} has {', '.join(sorted(extra))}: its CPU and idle sums include it"
            )
    try:
        for n, (round_no, index) in enumerate(alternation(args.rounds, len(variants)), 1):
            variant = variants[index]
            name = f"{'AB'[index]}{round_no + 1}"
            out = out_dir / f"{name}.json"
            command = bench_command(args, passthrough, variant.root, variant.args, out)
            say(f"run {n}/{args.rounds * len(variants)}: {name} = {variant.label}")
            result, why = run_once(command, out, out_dir / f"{name}.txt")
            if result is None:
                variant.failures.append(f"{name}: {why}")
                say(f"  {name} left out: {why}")
                continue
            variant.runs.append(result["headline"])
            for problem in result.get("problems", []):
                notes.append(f"{name} counted with a problem: {problem}")
            for warning in result.get("warnings", []):
                if "not measured" in warning or "behind the schedule" in warning:
                    notes.append(f"{name}: {warning}")
            h = result["headline"]
            say(
                f"  {name}: {num(h.get('orders_per_s'))} orders/s,"
                f" {num(h.get('platform_cpu_ms_per_order'))} ms platform CPU/order"
            )
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        if worktree is not None and not args.keep_worktree:
            remove_worktree(worktree)
    for variant in variants:
        notes += [f"left out: {f}" for f in variant.failures]
    summary = {
        "date": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": shlex.join(["python", "-m", "bench.compare", *(argv or sys.argv[1:])]),
        "rounds": args.rounds,
        "orders": args.orders,
        "seed": args.seed,
        "rate": args.rate,
        "variants": [
            {"label": v.label, "root": str(v.root), "args": v.args, "runs": v.runs}
            for v in variants
        ],
        "rows": comparison_rows(*variants),
        "notes": notes,
        "runs_dir": str(out_dir),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"compare-{stamp}.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(render_comparison(summary))
    print(f"\nraw numbers: {path.relative_to(REPO)} (each run's table and JSON: {out_dir})")
    return 0 if all(v.runs for v in variants) else 1


if __name__ == "__main__":
    sys.exit(run())
