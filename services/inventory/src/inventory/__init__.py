"""The inventory service of the fulfilment platform (skeleton: health, metrics, settings)."""
