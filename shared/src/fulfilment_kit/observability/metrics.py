"""The process's Prometheus registry and the kit's own metrics."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

# One registry per process, so tests can build several services in one interpreter.
REGISTRY = CollectorRegistry(auto_describe=True)
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

RELAY_LAG = Gauge(
    "fulfil_relay_lag_events",
    "Events committed to the event store but not yet published to Kafka",
    ["service"],
    registry=REGISTRY,
)
RELAY_PUBLISHED = Counter(
    "fulfil_relay_published_total",
    "Integration events published by the outbox relay",
    ["service", "topic"],
    registry=REGISTRY,
)
RELAY_BATCH_SECONDS = Histogram(
    "fulfil_relay_batch_seconds",
    "Time to publish one relay batch in one Kafka transaction",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
RELAY_RESTARTS = Counter(
    "fulfil_relay_restarts_total",
    "Relay restarts after an error (it resumes from the topic tail)",
    ["service"],
    registry=REGISTRY,
)
INBOX_APPLIED = Counter(
    "fulfil_inbox_applied_total",
    "Records applied by a consumer (recorded with their tracking offset)",
    ["consumer", "topic"],
    registry=REGISTRY,
)
INBOX_DUPLICATES = Counter(
    "fulfil_inbox_duplicates_total",
    "Redelivered records rejected because their offset was already tracked",
    ["consumer", "topic"],
    registry=REGISTRY,
)
INBOX_RETRIES = Counter(
    "fulfil_inbox_retries_total",
    "Attempts to apply a record that failed and were retried",
    ["consumer", "topic", "kind"],
    registry=REGISTRY,
)
INBOX_TRACKED_LAG = Gauge(
    "fulfil_inbox_tracked_offset_lag",
    "Records on the partition after the offset tracked in the database",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)
INBOX_BATCH_SECONDS = Histogram(
    "fulfil_inbox_batch_seconds",
    "Time to apply one batch of records of one partition in one transaction",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
DLQ_PUBLISHED = Counter(
    "fulfil_dlq_published_total",
    "Records sent to a dead-letter topic",
    ["consumer", "topic", "reason"],
    registry=REGISTRY,
)
