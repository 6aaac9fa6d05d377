"""Settings of the customer-service service itself (FULFIL_*)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from customer_service.cases.domain import SlaPolicy
from customer_service.returns.domain import ReturnPolicy
from fulfilment_kit.settings import Settings

_HOUR = 3600.0


class CustomerServiceSettings(Settings):
    """Settings of the customer-service service itself (FULFIL_*)."""

    model_config = SettingsConfigDict(env_prefix="FULFIL_")

    return_window_days: float = Field(default=30.0, ge=0)
    """Days after delivery a return may be requested."""
    return_auto_approve_max_minor: int = Field(default=20_000, ge=0)
    """A change of mind on an order up to this total is authorised without an agent."""
    return_damaged_refund_percent: int = Field(default=0, ge=0, le=100)
    """Refund of a unit the customer damaged (damage that is the shop's fault: 100)."""
    return_label_attempts: int = Field(default=3, ge=1)
    """Tries of a return label call that failed transiently."""
    return_label_backoff_s: float = Field(default=0.05, ge=0)
    """First wait between two tries of a return label call."""
    case_sla_urgent_first_response_s: float = Field(default=1 * _HOUR, gt=0)
    """An urgent case's first-response deadline."""
    case_sla_urgent_resolution_s: float = Field(default=8 * _HOUR, gt=0)
    """An urgent case's resolution deadline."""
    case_sla_high_first_response_s: float = Field(default=4 * _HOUR, gt=0)
    """A high-priority case's first-response deadline."""
    case_sla_high_resolution_s: float = Field(default=24 * _HOUR, gt=0)
    """A high-priority case's resolution deadline."""
    case_sla_normal_first_response_s: float = Field(default=8 * _HOUR, gt=0)
    """A normal case's first-response deadline."""
    case_sla_normal_resolution_s: float = Field(default=72 * _HOUR, gt=0)
    """A normal case's resolution deadline."""
    case_sla_low_first_response_s: float = Field(default=24 * _HOUR, gt=0)
    """A low-priority case's first-response deadline."""
    case_sla_low_resolution_s: float = Field(default=168 * _HOUR, gt=0)
    """A low-priority case's resolution deadline."""
    case_sla_poll_s: float = Field(default=1.0, gt=0)
    """Least time between two rounds of the SLA watch (it sleeps until the next deadline
    or a commit; ADR 24)."""
    test_clock: bool = False
    """Tests only, never in production: mount `POST /_test/clock` to move the service clock
    (loopback host and callers only, role `ops`)."""
    orders_url: str = "http://127.0.0.1:8001"
    """Orders' base URL, for read-model rebuilds from the services' logs (`--source logs`)."""
    inventory_url: str = "http://127.0.0.1:8002"
    """Inventory's base URL (rebuilds from the logs)."""
    payments_url: str = "http://127.0.0.1:8003"
    """Payments' base URL (rebuilds from the logs)."""
    shipping_url: str = "http://127.0.0.1:8004"
    """Shipping's base URL (rebuilds from the logs)."""
    customer_service_url: str = "http://127.0.0.1:8005"
    """Customer-service's own base URL (rebuilds from the logs)."""
    auth_token: SecretStr | None = None
    """The token (role `service`) `fulfil projections ... --source logs` sends to
    `GET /events` (a dev-issuer token when unset and the dev issuer is in use)."""

    def service_urls(self) -> dict[str, str]:
        """Each service's base URL, by service name (the rebuild reads their logs)."""
        return {
            service: str(getattr(self, f"{service.replace('-', '_')}_url")).rstrip("/")
            for service in ("orders", "inventory", "payments", "shipping", "customer-service")
        }

    def return_policy(self) -> ReturnPolicy:
        return ReturnPolicy(
            window_days=self.return_window_days,
            auto_approve_max_minor=self.return_auto_approve_max_minor,
            damaged_refund_percent=self.return_damaged_refund_percent,
        )

    def sla_policy(self) -> SlaPolicy:
        def pair(priority: str) -> tuple[timedelta, timedelta]:
            first = getattr(self, f"case_sla_{priority}_first_response_s")
            resolution = getattr(self, f"case_sla_{priority}_resolution_s")
            return timedelta(seconds=first), timedelta(seconds=resolution)

        return SlaPolicy({p: pair(p) for p in ("urgent", "high", "normal", "low")})
