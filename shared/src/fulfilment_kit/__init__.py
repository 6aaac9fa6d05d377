"""Platform kit shared by every fulfilment service."""
