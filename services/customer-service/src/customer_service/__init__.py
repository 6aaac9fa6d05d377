"""The customer-service service of the fulfilment platform (skeleton: health, metrics, settings)."""
