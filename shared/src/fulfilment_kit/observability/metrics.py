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
INBOX_UNKNOWN_TYPES = Counter(
    "fulfil_inbox_unknown_types_total",
    "Records of an event type this consumer does not know (a newer producer), skipped",
    ["consumer", "topic"],
    registry=REGISTRY,
)
INBOX_FENCED = Counter(
    "fulfil_inbox_fenced_total",
    "Tracking writes refused because another writer moved the partition's position",
    ["consumer", "topic"],
    registry=REGISTRY,
)
INBOX_PARTITION_BLOCKED = Gauge(
    "fulfil_inbox_partition_blocked",
    "1 while a partition is held at its tracked offset (reason: database, conflict, moved, "
    "handler, gap, kafka, unpositioned) and retried with backoff; the gap reason needs an operator",
    ["consumer", "topic", "partition", "reason"],
    registry=REGISTRY,
)
INBOX_RETENTION_GAP = Gauge(
    "fulfil_inbox_retention_gap_records",
    "Records deleted by retention before this consumer applied them (the partition is "
    "stopped until `fulfil consumers accept-gap`)",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)
RELAY_LAG_SECONDS = Gauge(
    "fulfil_relay_lag_seconds",
    "Age of the oldest event committed to the event store but not yet published (0 when none)",
    ["service"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "fulfil_consumer_lag_records",
    "Records on the partition after the consumer's read position (Kafka high-water minus position)",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_TRACKED_OFFSET = Gauge(
    "fulfil_consumer_tracked_offset",
    "Next offset the consumer will apply, as tracked in the database",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
)

# --- HTTP RED (labelled by route template, never the raw path) -------------------------
# Bucket edges on the latency objectives (p99 under 250 ms for commands, 1 s worst case).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_REQUESTS = Counter(
    "fulfil_http_requests_total",
    "HTTP requests served, by route template and status code",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "fulfil_http_request_duration_seconds",
    "Time to serve an HTTP request, by route template",
    ["service", "method", "route"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "fulfil_http_requests_in_flight",
    "HTTP requests being served now",
    ["service"],
    registry=REGISTRY,
)

# --- what the process is and whether it can serve ----------------------------------------
BUILD_INFO = Gauge(
    "fulfil_build_info",
    "Always 1: the service's name, version and source revision",
    ["service", "version", "revision"],
    registry=REGISTRY,
)
READY = Gauge(
    "fulfil_ready",
    "1 when the service's readiness checks pass (refreshed every 2 s), else 0",
    ["service"],
    registry=REGISTRY,
)
READINESS_PROBLEMS = Gauge(
    "fulfil_readiness_problem",
    "1 for each readiness check that fails now (check names are fixed per service)",
    ["service", "check"],
    registry=REGISTRY,
)
