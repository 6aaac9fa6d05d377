"""Settings of the shipping service itself (FULFIL_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from fulfilment_kit import devauth
from fulfilment_kit.settings import AuthSettings, Settings
from shipping.gateway import SANDBOX_CARRIER, webhook_secret_name


class ShippingSettings(Settings):
    """Settings of the shipping service itself (FULFIL_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_")

    shipping_auto_dispatch_s: float = Field(default=0.0, ge=0)
    """Ship packing parcels after this many seconds; 0 disables auto-dispatch (`make run`
    uses 1.5)."""
    carrier_gateway: Literal["sandbox", "http"] = "sandbox"
    """`http` calls the carrier at the URL with the key below; `sandbox` is in-process."""
    carrier_url: str | None = None
    """The carrier's API (required with the `http` gateway)."""
    carrier_key: SecretStr | None = None
    """The carrier's API key (required with the `http` gateway)."""
    carrier_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of each call to the carrier."""
    carrier_attempts: int = Field(default=3, ge=1)
    """Tries of a carrier call that failed transiently."""
    carrier_backoff_s: float = Field(default=0.05, ge=0)
    """First wait between two tries of a carrier call."""
    carrier_webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    """JSON `{"<carrier>": "<shared secret>"}` checking the carriers' webhook signatures (none:
    the dev secret of `sandbox-post` in the dev directory while the dev issuer is used)."""
    carrier_webhook_tolerance_s: float = Field(default=300.0, gt=0, le=3600)
    """How far a webhook's timestamp may be from now (replays of older ones are refused)."""

    def webhook_secrets(self) -> dict[str, bytes]:
        """The configured secrets; with none and the dev issuer in use, the sandbox carrier's
        generated dev secret (dev only)."""
        configured = {
            k: v.get_secret_value().encode() for k, v in self.carrier_webhook_secrets.items()
        }
        if configured or not AuthSettings().dev:
            return configured
        return {SANDBOX_CARRIER: devauth.dev_secret(webhook_secret_name(SANDBOX_CARRIER))}

    @model_validator(mode="after")
    def _http_needs_url_and_key(self) -> ShippingSettings:
        if self.carrier_gateway == "http" and not (self.carrier_url and self.carrier_key):
            raise ValueError(
                "FULFIL_CARRIER_GATEWAY=http needs FULFIL_CARRIER_URL and FULFIL_CARRIER_KEY"
            )
        return self
