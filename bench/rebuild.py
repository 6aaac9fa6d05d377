"""Projection rebuild speed of a run's platform: the checkout's own `fulfil projections
rebuild all --source topics --dry-run` over the run's topics, into shadow tables of the
read models' database (never swapped in), after the load has settled."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .platform import bench_state_dir

REPORT = re.compile(r"([\d,]+) events in ([\d.]+) s \(([\d,]+) events/s\)")


@dataclass(frozen=True)
class RebuildFigure:
    events: int
    seconds: float  # as the command reports it (reading and applying)
    wall_s: float  # the whole command, interpreter start included

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def parse_report(stdout: str) -> tuple[int, float] | None:
    """(events, seconds) from the command's report line, None without one."""
    match = REPORT.search(stdout)
    if match is None:
        return None
    return int(match.group(1).replace(",", "")), float(match.group(2))


def measure(root: Path, database: str, prefix: str, timeout: float = 600) -> RebuildFigure:
    """Run the rebuild of the checkout at `root`; raises RuntimeError when it fails."""
    command = [str(root / ".venv" / "bin" / "fulfil")]
    command += ["projections", "rebuild", "all", "--source", "topics", "--dry-run"]
    env = {
        **os.environ,
        "POSTGRES_DBNAME": database,
        "FULFIL_TOPIC_PREFIX": prefix,
        "FULFIL_STATE_DIR": str(bench_state_dir()),
        "FULFIL_LOG_LEVEL": "WARNING",
    }
    began = time.monotonic()
    try:
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{' '.join(command[1:5])}: {type(exc).__name__}: {exc}") from exc
    wall = time.monotonic() - began
    parsed = parse_report(done.stdout)
    if done.returncode != 0 or parsed is None:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [""]
        raise RuntimeError(f"rebuild exited {done.returncode}: {last[0][:300]}")
    return RebuildFigure(parsed[0], parsed[1], wall)
