"""FastAPI pieces every service shares: errors, health, metrics, request context."""
