"""The shipping service of the fulfilment platform (skeleton: health, metrics, settings)."""
