"""Operator tools over the consumers: the DLQ (`fulfil dlq`), positions (`fulfil consumers`)."""
