"""The orders service: places orders and tracks each one through its lifecycle."""
