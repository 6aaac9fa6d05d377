"""End-to-end benchmark of the fulfilment platform: `python -m bench` (or `make bench`).

Starts the five services on fresh databases and topics, drives orders through the public
HTTP API, measures throughput, stage latencies and resource use, measures the Kafka and
PostgreSQL ceilings on the same machine, and prints one table (raw numbers go to
bench/results/<timestamp>.json).
"""
