"""Logging, metrics and health shared by every service."""
