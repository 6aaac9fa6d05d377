"""Settings of the inventory service itself (FULFIL_INVENTORY_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fulfilment_kit.settings import Settings
from inventory.domain import DEFAULT_LOW_STOCK_THRESHOLD, MAX_STOCK


class InventorySettings(Settings):
    """Settings of the inventory service itself (FULFIL_INVENTORY_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_INVENTORY_")

    default_threshold: int = Field(default=DEFAULT_LOW_STOCK_THRESHOLD, ge=0, le=MAX_STOCK)
    """Low-stock threshold of a new SKU."""
