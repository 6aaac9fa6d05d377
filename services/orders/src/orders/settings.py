"""Settings of the orders service itself (FULFIL_ORDERS_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fulfilment_kit.settings import Settings

_DAY = 86400.0


class OrdersSettings(Settings):
    """How long an order may wait in a stage before it is flagged (FULFIL_ORDERS_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_ORDERS_")

    deadline_placed_s: float = Field(default=120.0, gt=0)
    """A placed order whose stock is not locked after this long is flagged."""
    deadline_stock_locked_s: float = Field(default=120.0, gt=0)
    """An order with stock locked but not paid after this long is flagged."""
    deadline_paid_s: float = Field(default=2 * _DAY, gt=0)
    """A paid order not shipped after this long is flagged."""
    deadline_shipped_s: float = Field(default=14 * _DAY, gt=0)
    """A shipped order not delivered after this long is flagged."""

    def deadlines_s(self) -> dict[str, float]:
        """Seconds per stage, keyed by the stage's name (`placed`, `stock_locked`, ...)."""
        prefix, suffix = "deadline_", "_s"
        return {
            name.removeprefix(prefix).removesuffix(suffix): getattr(self, name)
            for name in type(self).model_fields
            if name.startswith(prefix)
        }
