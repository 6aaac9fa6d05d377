"""The inventory service: stock per SKU, all-or-nothing reservations per order."""
