"""Test-run isolation: a topic prefix unique to this run, so runs never see each other's records."""

from __future__ import annotations

import os
import uuid

os.environ.setdefault("FULFIL_TOPIC_PREFIX", f"test-{uuid.uuid4().hex[:8]}.")
