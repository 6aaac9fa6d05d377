"""py-spy attached to the platform's processes while the benchmark's load runs.

`python -m bench --profile [--gil] [--profile-services orders,inventory]` (or `make profile`):
one `py-spy record --pid` per chosen process (replica 1 of each), started just before the
first POST and stopped (SIGINT: py-spy then writes its file) once every order has shipped.
Files: `.local/profiles/<UTC stamp>/<process>.<ext>` (speedscope JSON by default: open it at
speedscope's site or its npm viewer; `--profile-format flamegraph` writes an SVG).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .platform import REPO

FORMATS = {"speedscope": "speedscope.json", "flamegraph": "svg", "raw": "txt"}
PROFILE_DIR = REPO / ".local" / "profiles"


def py_spy() -> Path:
    """The py-spy of this environment (the dev dependency group pins it)."""
    path = Path(sys.executable).parent / "py-spy"
    if not path.exists():
        raise RuntimeError(f"py-spy not found at {path}: run `make install` (dev group)")
    return path


def record_command(
    pid: int, output: Path, *, fmt: str, gil: bool, rate: int, binary: Path | str
) -> list[str]:
    """The `py-spy record` command line for one process."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown profile format {fmt!r} (one of {', '.join(FORMATS)})")
    command = [str(binary), "record", "--pid", str(pid), "--rate", str(rate)]
    command += ["--format", fmt, "--output", str(output)]
    if gil:
        command.append("--gil")  # only samples of threads holding the GIL: CPU, not waits
    return command


def choose(requested: str | None, available: tuple[str, ...]) -> list[str]:
    """The processes to profile: a comma-separated subset of `available`, default all."""
    if not requested:
        return list(available)
    chosen = [name.strip() for name in requested.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"no such process to profile: {', '.join(unknown)}")
    return chosen


@dataclass
class Profiler:
    """One py-spy per process; `stop()` makes each write its file."""

    directory: Path
    fmt: str = "speedscope"
    gil: bool = False
    rate: int = 100
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    def start(self, targets: dict[str, int]) -> None:
        binary = py_spy()
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in targets.items():
            output = self.directory / f"{name}.{FORMATS[self.fmt]}"
            log = (self.directory / f"{name}.py-spy.log").open("wb")
            command = record_command(
                pid, output, fmt=self.fmt, gil=self.gil, rate=self.rate, binary=binary
            )
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            self.running[name] = (proc, output)

    def stop(self, timeout: float = 60) -> dict[str, str]:
        """Stop every recorder; returns process -> written file (or what went wrong)."""
        for proc, _ in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        written: dict[str, str] = {}
        for name, (proc, output) in self.running.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            if output.exists():
                written[name] = str(output)
            else:
                log = self.directory / f"{name}.py-spy.log"
                tail = ""
                with contextlib.suppress(OSError):
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:][0]
                written[name] = f"no profile written (py-spy exit {proc.returncode}: {tail})"
        self.running.clear()
        return written
