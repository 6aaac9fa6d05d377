"""The Dockerfile: hadolint-clean, multi-stage from the lock file, pinned base, non-root."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def hadolint(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HADOLINT, "-"], input=text, capture_output=True, text=True)


def test_hadolint_passes() -> None:
    result = hadolint(DOCKERFILE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_an_unpinned_base_and_unpinned_installs() -> None:
    bad = "FROM python:latest\nRUN pip install uv\nRUN apt-get update && apt-get install -y gcc\n"
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3008"):
        assert rule in result.stdout, result.stdout


def test_the_image_is_built_from_the_lock_by_a_pinned_base_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert len(stages) == 2, stages
    assert all(image == "${PYTHON_IMAGE}" for image, _ in stages)
    assert "uv sync --locked --no-dev" in text
    final = text.split("\nFROM ${PYTHON_IMAGE}\n", 1)[1]
    assert "uv" not in re.findall(r"^RUN .*", final, re.M)[0].split()  # no uv in the final image
    [user] = re.findall(r"^USER (\S+)$", final, re.M)
    assert user.split(":")[0] not in {"root", "0"}
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*", "the build context is an allow-list"
