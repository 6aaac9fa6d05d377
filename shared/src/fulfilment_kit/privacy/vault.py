"""Seal personal values for a customer, reveal them to whoever may, erase the customer."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from prometheus_client import Counter

from fulfilment_kit.observability.metrics import REGISTRY
from fulfilment_kit.privacy.keys import KeyEncryptionKeys, generate_kek
from fulfilment_kit.privacy.sealing import (
    PURPOSES,
    REDACTED,
    Purpose,
    is_sealed,
    open_with,
    parse,
    seal_with,
)
from fulfilment_kit.privacy.settings import PrivacySettings
from fulfilment_kit.privacy.store import InMemoryKeyStore, KeyStore, StoredKey, open_key_store
from fulfilment_kit.settings import PostgresSettings, ServiceSettings

__all__ = [
    "REVEALS",
    "NotAllowed",
    "PersonalDataVault",
    "Sealer",
    "in_process_vault",
    "open_vault",
]

REVEALS = Counter(
    "fulfil_personal_data_reveals_total",
    "Sealed personal values opened through the kit (outcome: revealed, or erased: redacted)",
    ["purpose", "outcome"],
    registry=REGISTRY,
)
ERASURES = Counter(
    "fulfil_personal_data_erasures_total",
    "Customers whose data keys this process destroyed (crypto-shredding)",
    registry=REGISTRY,
)


T = TypeVar("T")


class DataKeyMissing(RuntimeError):
    """A sealed value whose data key this key store never held (not erased: misconfigured)."""


class NotAllowed(PermissionError):
    """This service may not open values sealed for that purpose."""


def _aad(customer_id: uuid.UUID, generation: int) -> bytes:
    return f"data-key:{customer_id}:{generation}".encode()


def _replace(value: T, change: Any, keep: frozenset[str]) -> T:
    assert dataclasses.is_dataclass(value)
    assert not isinstance(value, type)
    changes = {
        f.name: change(getattr(value, f.name))
        for f in dataclasses.fields(value)
        if f.name not in keep and isinstance(getattr(value, f.name), str)
    }
    return dataclasses.replace(value, **changes)


@dataclasses.dataclass(frozen=True)
class Sealer:
    """Seals values of one customer under the data key that was current when it was made."""

    customer_id: uuid.UUID
    generation: int
    key: bytes = dataclasses.field(repr=False)

    def seal(self, purpose: Purpose, value: str) -> str:
        return seal_with(self.key, self.customer_id, self.generation, purpose, value)

    def seal_optional(self, purpose: Purpose, value: str | None) -> str | None:
        return None if value is None else self.seal(purpose, value)

    def seal_fields(self, purpose: Purpose, value: T, keep: Iterable[str] = ()) -> T:
        """A copy of a dataclass with every string field but `keep` sealed."""
        return _replace(value, lambda s: self.seal(purpose, s), frozenset(keep))


class PersonalDataVault:
    """Per-customer data keys from the key store, unwrapped by the KEKs, briefly cached.

    `may_open` lists the purposes this service opens (payments: the token; shipping: the
    contact details); any service seals. Every open is counted (`REVEALS`, no ids in labels).
    """

    def __init__(
        self,
        store: KeyStore,
        keks: KeyEncryptionKeys,
        may_open: Iterable[Purpose] = (),
        cache_s: float = 5.0,
    ) -> None:
        self.store = store
        self.keks = keks
        self.may_open = frozenset(may_open)
        self.cache_s = cache_s
        self._cache: dict[tuple[uuid.UUID, int], tuple[float, bytes | None]] = {}
        self._lock = threading.Lock()
        for purpose in PURPOSES:
            for outcome in ("revealed", "erased"):
                REVEALS.labels(purpose, outcome)

    # --- sealing ---

    def sealer(self, customer_id: uuid.UUID) -> Sealer:
        """Seals under the customer's current data key (created on first use), looked up
        once: one key-store round trip for everything one command seals."""
        generation, key = self._current_key(customer_id)
        return Sealer(customer_id, generation, key)

    def sealers(self, customer_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Sealer]:
        """A sealer for each customer, as `sealer` makes it, their keys asked of the key store
        in one round trip (a group of placements)."""
        distinct = list(dict.fromkeys(customer_ids))
        if len(distinct) == 1:
            return {distinct[0]: self.sealer(distinct[0])}
        firsts = [self._new_key(customer_id, 1) for customer_id in distinct]
        answers = self.store.first_or_latest_many([stored for _, stored in firsts])
        sealers: dict[uuid.UUID, Sealer] = {}
        for customer_id, (data_key, _), (latest, created) in zip(
            distinct, firsts, answers, strict=True
        ):
            key = data_key if created else None
            if latest is not None and not created and not latest.erased:
                key = self._unwrapped(latest)
            if key is None:  # erased, or a twin's first key meanwhile: as `sealer` goes on
                sealers[customer_id] = self.sealer(customer_id)
                continue
            generation = 1 if created else latest.generation if latest is not None else 1
            self._remember(customer_id, generation, key)
            sealers[customer_id] = Sealer(customer_id, generation, key)
        return sealers

    def seal(self, customer_id: uuid.UUID, purpose: Purpose, value: str) -> str:
        """`value` sealed under the customer's current data key (created on first use)."""
        return self.sealer(customer_id).seal(purpose, value)

    def seal_optional(
        self, customer_id: uuid.UUID, purpose: Purpose, value: str | None
    ) -> str | None:
        return None if value is None else self.seal(customer_id, purpose, value)

    def seal_fields(
        self, customer_id: uuid.UUID, purpose: Purpose, value: T, keep: Iterable[str] = ()
    ) -> T:
        """A copy of a dataclass with every string field but `keep` sealed."""
        return self.sealer(customer_id).seal_fields(purpose, value, keep)

    def reveal_fields(self, value: T) -> T:
        """A copy of a dataclass with every sealed string field revealed."""
        return _replace(value, self.reveal, frozenset())

    def _current_key(self, customer_id: uuid.UUID) -> tuple[int, bytes]:
        """The customer's live generation and its data key, asked of the key store each time.

        Not from a cache: after an erasure by another replica the customer's next order must
        get a new generation at once (ADR 21), not a destroyed key for `cache_s`. The ask is
        one statement, which also creates a new customer's first key; the unwrapped key is
        then cached for the reveals that follow."""
        data_key, first = self._new_key(customer_id, 1)
        latest, created = self.store.first_or_latest(first)
        if created:
            return self._remember(customer_id, 1, data_key)
        for _ in range(3):
            if latest is None:  # a twin created generation 1 meanwhile: read it
                latest = self.store.latest(customer_id)
            if latest is not None and not latest.erased:
                key = self._unwrapped(latest)
                if key is not None:
                    return self._remember(customer_id, latest.generation, key)
            # no key yet, or erased: a new generation (nothing older opens with it)
            generation = latest.generation + 1 if latest is not None else 1
            data_key, stored = self._new_key(customer_id, generation)
            if self.store.create(stored):
                return self._remember(customer_id, generation, data_key)
            latest = self.store.get(customer_id, generation)  # a concurrent twin's
        raise RuntimeError("the customer's data key was erased while sealing; retry")

    def _new_key(self, customer_id: uuid.UUID, generation: int) -> tuple[bytes, StoredKey]:
        data_key = AESGCM.generate_key(bit_length=256)
        kek_id, wrapped = self.keks.wrap(data_key, _aad(customer_id, generation))
        return data_key, StoredKey(customer_id, generation, kek_id, wrapped)

    def _remember(self, customer_id: uuid.UUID, generation: int, key: bytes) -> tuple[int, bytes]:
        self._put(customer_id, generation, key, time.monotonic())
        return generation, key

    # --- revealing ---

    def reveal(self, value: str) -> str:
        """The plaintext of a sealed value, `REDACTED` once its customer is erased.

        A value that is not sealed is returned as is (records from before sealing)."""
        if not is_sealed(value):
            return value
        sealed = parse(value)
        if sealed.purpose not in self.may_open:
            raise NotAllowed(f"this service may not open {sealed.purpose} data")
        key = self._key(sealed.customer_id, sealed.generation)
        plaintext: str | None = None
        if key is not None:
            try:
                plaintext = open_with(key, sealed)
            except InvalidTag:
                plaintext = None
        REVEALS.labels(sealed.purpose, "revealed" if plaintext is not None else "erased").inc()
        return plaintext if plaintext is not None else REDACTED

    def reveal_optional(self, value: str | None) -> str | None:
        return None if value is None else self.reveal(value)

    def prefetch(self, values: Iterable[str | None]) -> None:
        """Read the data keys of the sealed `values` this vault may open and has not cached,
        with one key-store statement: a batch about to reveal them one by one asks once.
        Nothing without a cache (`cache_s` 0); a key missing is left to `reveal` to report."""
        if self.cache_s <= 0:
            return
        now = time.monotonic()
        wanted: set[tuple[uuid.UUID, int]] = set()
        for value in values:
            if value is None or not is_sealed(value):
                continue
            sealed = parse(value)
            pair = (sealed.customer_id, sealed.generation)
            if sealed.purpose not in self.may_open or pair in wanted:
                continue
            with self._lock:
                cached = self._cache.get(pair)
            if cached is None or cached[0] <= now:
                wanted.add(pair)
        if wanted:
            for stored in self.store.get_many(wanted):
                key = self._unwrapped(stored)
                self._put(stored.customer_id, stored.generation, key, now)

    def prefetch_fields(self, values: Iterable[Any]) -> None:
        """`prefetch` for the string fields of dataclasses (e.g. addresses about to be
        revealed with `reveal_fields`): one key-store statement for the lot."""
        self.prefetch(
            getattr(value, f.name)
            for value in values
            for f in dataclasses.fields(value)
            if isinstance(getattr(value, f.name), str)
        )

    def _key(self, customer_id: uuid.UUID, generation: int) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get((customer_id, generation))
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = self.store.get(customer_id, generation)
        if stored is None:  # erasure leaves a row behind: no row is a key store we do not share
            raise DataKeyMissing(
                "a sealed value's data key is not in this service's key store: the services that"
                " seal and open each other's values must share one (FULFIL_PRIVACY_KEYSTORE_DBNAME)"
            )
        key = self._unwrapped(stored)
        self._put(customer_id, generation, key, now)
        return key

    def _unwrapped(self, stored: StoredKey) -> bytes | None:
        """The data key of a stored row (None: erased)."""
        if stored.wrapped is None or stored.kek_id is None:
            return None
        try:
            return self.keks.unwrap(
                stored.kek_id, stored.wrapped, _aad(stored.customer_id, stored.generation)
            )
        except InvalidTag as exc:
            raise RuntimeError("a data key does not unwrap: wrong KEK configured") from exc

    def _put(self, customer_id: uuid.UUID, generation: int, key: bytes | None, now: float) -> None:
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[(customer_id, generation)] = (now + self.cache_s, key)

    # --- erasing and rotating ---

    def erase(self, customer_id: uuid.UUID) -> int:
        """Destroy the customer's data keys (idempotent); how many were still live."""
        destroyed = self.store.erase(customer_id)
        with self._lock:
            for cached in [k for k in self._cache if k[0] == customer_id]:
                del self._cache[cached]
        if destroyed:
            ERASURES.inc()
        return destroyed

    def rewrap(self, batch: int = 500) -> int:
        """Rewrap every live data key under the current KEK (after a rotation); how many."""
        done = 0
        while True:
            keys = self.store.wrapped_by_other_than(self.keks.current, batch)
            if not keys:
                return done
            for stored in keys:
                assert stored.kek_id is not None
                assert stored.wrapped is not None
                aad = _aad(stored.customer_id, stored.generation)
                data_key = self.keks.unwrap(stored.kek_id, stored.wrapped, aad)
                kek_id, wrapped = self.keks.wrap(data_key, aad)
                renewed = StoredKey(stored.customer_id, stored.generation, kek_id, wrapped)
                done += self.store.rewrap(renewed, stored.kek_id)

    def close(self) -> None:
        self.store.close()


_IN_PROCESS: tuple[InMemoryKeyStore, KeyEncryptionKeys] | None = None


def in_process_vault(may_open: Iterable[Purpose] = ()) -> PersonalDataVault:
    """A vault over one in-memory key store shared by this process (applications built
    without a vault: unit tests and in-memory wiring; a service process opens `open_vault`)."""
    global _IN_PROCESS
    if _IN_PROCESS is None:
        _IN_PROCESS = (InMemoryKeyStore(), KeyEncryptionKeys.parse(generate_kek("in-process")))
    store, keks = _IN_PROCESS
    return PersonalDataVault(store, keks, may_open, cache_s=0)


def open_vault(
    service: str,
    may_open: Iterable[Purpose] = (),
    settings: PrivacySettings | None = None,
    service_settings: ServiceSettings | None = None,
    postgres: PostgresSettings | None = None,
) -> PersonalDataVault:
    """The vault of `service` from its settings (key store and KEKs)."""
    settings = settings or PrivacySettings()
    store = open_key_store(service, settings, service_settings, postgres)
    return PersonalDataVault(
        store, KeyEncryptionKeys.from_settings(settings), may_open, settings.key_cache_s
    )
