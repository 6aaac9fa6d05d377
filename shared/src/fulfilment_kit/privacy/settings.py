"""Where the data keys live and what wraps them (FULFIL_PRIVACY_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from fulfilment_kit.settings import Settings, state_dir


class PrivacySettings(Settings):
    """The key store of per-customer data keys and the key-encryption keys (KEKs) wrapping them.

    With neither `keks` nor `kek_file` set, a dev KEK is generated into `<state dir>/privacy`
    (dev only: anyone with that file and the key store reads every customer's data).
    """

    model_config = SettingsConfigDict(env_prefix="FULFIL_PRIVACY_")

    keks: SecretStr | None = None
    """Key-encryption keys as `id=base64(32 bytes)` separated by commas; the first wraps new
    data keys, all unwrap (rotation: put the new one first, then `fulfil privacy rewrap`)."""
    kek_file: Path | None = None
    """The same list in a file (a mounted secret), instead of `keks`."""
    dev_kek: bool = True
    """`false` refuses to start on a generated dev KEK (deployments)."""
    dev_dir: Path = Field(default_factory=lambda: state_dir() / "privacy")
    """Where the dev KEK is generated (`$FULFIL_STATE_DIR/privacy`; dev only)."""
    keystore_dbname: str | None = None
    """PostgreSQL database of the shared key store (default: the service's own database; the
    services that seal and open each other's values must share one)."""
    key_cache_s: float = Field(default=5.0, ge=0, le=300)
    """How long a process keeps an unwrapped data key; an erasure elsewhere is honoured by
    this process within this time (the erasing process forgets the key at once)."""

    @property
    def dev(self) -> bool:
        return self.keks is None and self.kek_file is None

    @model_validator(mode="after")
    def _safe(self) -> PrivacySettings:
        if self.keks is not None and self.kek_file is not None:
            raise ValueError("set FULFIL_PRIVACY_KEKS or FULFIL_PRIVACY_KEK_FILE, not both")
        if self.dev and not self.dev_kek:
            raise ValueError(
                "FULFIL_PRIVACY_DEV_KEK=false forbids the generated dev KEK: set "
                "FULFIL_PRIVACY_KEKS or FULFIL_PRIVACY_KEK_FILE"
            )
        return self
