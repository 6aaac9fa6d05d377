"""customer-service read models: projections of every public event into PostgreSQL tables.

Every table is a join-semilattice: each event only ever merges values into keyed rows
with LEAST, GREATEST or a last-writer-wins register ordered by the producer's own log
(`ce_sequence`). Applying the same events in any order, any number of times, gives the
same rows, which is what lets a rebuild from the topics, or from the services' logs over
HTTP, equal the live tables row for row (see README.md beside this file).
"""

GROUP = "customer-service-projections"
"""The consumer group (and tracking-name prefix) of the live projections."""

SCHEMA = "readmodels"
"""PostgreSQL schema of the live read-model tables, tracking and applied events."""
