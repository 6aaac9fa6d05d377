"""The payments service of the fulfilment platform (skeleton: health, metrics, settings)."""
