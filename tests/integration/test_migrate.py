"""The deployments' init step creates a service's tables on a fresh database and exits."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from fulfilment_kit.settings import PostgresSettings
from tests.support.processes import service_env


def tables(database: str) -> set[str]:
    pg = PostgresSettings()
    dsn = f"host={pg.host} port={pg.port} user={pg.user} password={pg.password} dbname={database}"
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrate_creates_the_tables_without_serving_or_kafka(database: str) -> None:
    assert tables(database) == set()
    result = subprocess.run(
        [sys.executable, "-m", "fulfilment_kit.migrate", "customer_service.main:create_app"],
        env=service_env(POSTGRES_DBNAME=database, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    created = tables(database)
    # the event store (events + inbox tracking) and the read models
    assert {"public.customer-service_events", "public.customer-service_tracking"} <= created
    assert {"readmodels.timeline", "readmodels.tracking"} <= created
