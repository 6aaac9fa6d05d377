"""What is running: the service's version and source revision, for `fulfil_build_info`."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from fulfilment_kit.observability import metrics
from fulfilment_kit.settings import ServiceSettings

UNKNOWN = "unknown"


def version_of(service: str) -> str:
    """The installed version of the service's distribution (`fulfilment-<service>`)."""
    try:
        return metadata.version(f"fulfilment-{service}")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def revision() -> str:
    """FULFIL_REVISION (set by the image build), else the source checkout's commit."""
    given = ServiceSettings().revision.strip()
    if given:
        return given[:40]
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    head = found.stdout.strip()
    return head if found.returncode == 0 and head else UNKNOWN


def publish_build_info(service: str) -> None:
    metrics.BUILD_INFO.labels(service, version_of(service), revision()).set(1)
