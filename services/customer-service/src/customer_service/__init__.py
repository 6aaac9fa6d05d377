"""The customer-service service: returns, cases and the read models of every service's events."""
