"""Kafka wiring: CloudEvents encoding, the outbox relay, the inbox consumer, DLQ, topics."""
