"""Settings of the payments service itself (FULFIL_PAYMENTS_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from fulfilment_kit.settings import Settings


class PaymentsSettings(Settings):
    """Which provider payments talks to, and how it retries (FULFIL_PAYMENTS_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_PAYMENTS_")

    gateway: Literal["sandbox", "http"] = "sandbox"
    """`http` calls the provider at the URL with the key below; `sandbox` is in-process."""
    provider_url: str = "http://127.0.0.1:8090"
    """The payment provider's API (with the `http` gateway)."""
    provider_key: SecretStr = SecretStr("")
    """The provider's API key (with the `http` gateway)."""
    provider_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of each call to the provider (calls run outside any database transaction)."""
    gateway_attempts: int = Field(default=3, ge=1, le=20)
    """Tries of a call that failed transiently."""
    gateway_backoff_s: float = Field(default=0.05, ge=0)
    """First wait between two tries of a transiently failed call."""
    reconcile_first_s: float = Field(default=0.5, gt=0)
    """Wait before the first lookup of an unknown outcome; it doubles after each unclear one."""
    reconcile_max_s: float = Field(default=30.0, gt=0)
    """Longest wait between two lookups of one payment."""
    reconcile_attempts: int = Field(default=8, ge=1)
    """Unclear lookups after which a payment-problem case is opened (the deadline, whichever
    comes first); lookups go on at the longest interval afterwards."""
    unknown_deadline_s: float = Field(default=300.0, gt=0)
    """How long an outcome may stay unknown before a payment-problem case is opened."""
    capture_settle_s: float = Field(default=10.0, gt=0)
    """A payment cancelled while its capture may be in flight is abandoned only after lookups
    have found no charge for this long: a charge sent just before the cancellation (by this
    replica, after a timeout, or by a twin) can reach the provider late (longer than the
    provider's answer can take, `provider_timeout_s`)."""
    worker_round_s: float = Field(default=2.0, gt=0)
    """No new provider call starts in a worker round after this long (bounds a round)."""
