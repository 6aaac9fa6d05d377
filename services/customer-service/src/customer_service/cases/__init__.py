"""Support cases: the aggregate, its SLA policy and watch, the directory, application, routes."""
