"""The payments service: captures the order total once stock is locked, and refunds it."""
