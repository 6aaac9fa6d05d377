"""Where a rebuild reads every public event from: the topics, or each service's log over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx
from aiokafka import TopicPartition

from customer_service.settings import CustomerServiceSettings
from fulfilment_kit import devauth
from fulfilment_kit.contracts import topics
from fulfilment_kit.http.auth import SERVICE
from fulfilment_kit.messaging import cloudevents, kafka
from fulfilment_kit.settings import AuthSettings, KafkaSettings

Envelope = cloudevents.Envelope


def service_urls() -> dict[str, str]:
    """FULFIL_<SERVICE>_URL of each service, else its local default (127.0.0.1:800x)."""
    return CustomerServiceSettings().service_urls()


def events_token() -> str:
    """The bearer token (role `service`) for the services' GET /events: FULFIL_AUTH_TOKEN,
    else, with the dev issuer in use, one minted by it (dev only)."""
    given = CustomerServiceSettings().auth_token
    if given is not None and given.get_secret_value():
        return given.get_secret_value()
    settings = AuthSettings()
    if not settings.dev:
        raise RuntimeError("reading the logs needs FULFIL_AUTH_TOKEN (a token with role service)")
    return devauth.mint([SERVICE], "customer-service-rebuild", ttl_s=3600, settings=settings)


class Source(Protocol):
    name: str
    undecodable: int
    """Records skipped because they are not valid public events (the live inbox DLQs them)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def total(self) -> int | None:
        """How many records there are to read now (an estimate, for progress)."""

    def batches(self) -> AsyncIterator[list[Envelope]]:
        """Events up to the end as of the last `total()`, batch by batch; call again later to
        read what has been appended since."""


class TopicSource:
    """All partitions of the five topics, group-less and read_committed, up to end offsets."""

    name = "topics"

    def __init__(
        self,
        kafka_settings: KafkaSettings | None = None,
        batch: int = 2000,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        self.kafka_settings = kafka_settings or KafkaSettings()
        self.batch = batch
        self.share = share
        """(index, of): read only the partitions numbered index modulo `of` (all by default)."""
        self.undecodable = 0
        self._consumer: Any = None
        self._partitions: list[TopicPartition] = []
        self._ends: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}

    async def open(self) -> None:
        self._consumer = kafka.reader(self.kafka_settings, max_partition_fetch_bytes=4 << 20)
        await self._consumer.start()
        for topic in (topics.physical(t) for t in topics.ALL):
            parts = self._consumer.partitions_for_topic(topic)
            deadline = time.monotonic() + 30
            while not parts:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {topic} does not exist (create it: make topics)")
                await self._consumer._client.force_metadata_update()
                parts = self._consumer.partitions_for_topic(topic)
            self._partitions.extend(TopicPartition(topic, p) for p in sorted(parts))
        # By partition number: the topics have as many partitions and are keyed by order id,
        # so all events of one order (and all rows they write) are in one share.
        index, of = self.share
        self._partitions = [tp for tp in self._partitions if tp.partition % of == index]
        self._consumer.assign(self._partitions)
        beginnings = await self._consumer.beginning_offsets(self._partitions)
        for tp, offset in beginnings.items():
            self._consumer.seek(tp, offset)
            self._positions[tp] = offset

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def total(self) -> int | None:
        self._ends = await self._consumer.end_offsets(self._partitions)
        return sum(max(0, self._ends[tp] - self._positions[tp]) for tp in self._partitions)

    async def batches(self) -> AsyncIterator[list[Envelope]]:
        consumer = self._consumer
        pending = {tp for tp in self._partitions if self._positions[tp] < self._ends[tp]}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=500, max_records=self.batch)
            envelopes: list[Envelope] = []
            for records in fetched.values():
                for record in records:  # past the end snapshot too: never skip a record
                    try:
                        envelopes.append(cloudevents.decode(record.value, record.headers))
                    except cloudevents.DecodeError:
                        self.undecodable += 1
            for tp in list(pending):
                self._positions[tp] = await consumer.position(tp)
                if self._positions[tp] >= self._ends[tp]:
                    pending.discard(tp)
            if envelopes:
                yield envelopes


class LogSource:
    """`GET /events` of each service, page by page, until each log's end."""

    name = "logs"

    def __init__(
        self,
        urls: dict[str, str] | None = None,
        page: int = 2000,
        timeout_s: float = 30,
        token: str | None = None,
    ) -> None:
        self.urls = urls or service_urls()
        self.token = token
        self.page = page
        self.timeout_s = timeout_s
        self.undecodable = 0
        self._after = dict.fromkeys(self.urls, 0)
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        token = self.token or events_token()
        self._client = httpx.AsyncClient(
            timeout=self.timeout_s, headers={"Authorization": f"Bearer {token}"}
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _get(self, service: str, after: int, limit: int) -> dict[str, Any]:
        assert self._client is not None, "open() first"
        url = f"{self.urls[service]}/events"
        try:
            reply = await self._client.get(url, params={"after": after, "limit": limit})
        except httpx.TransportError as exc:
            raise RuntimeError(f"{service} is unreachable at {url}: {exc}") from exc
        if reply.status_code != 200:
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:200]}")
        page: dict[str, Any] = reply.json()
        return page

    async def total(self) -> int | None:
        remaining = 0
        for service, after in self._after.items():
            head = int((await self._get(service, after, 1))["head"])
            remaining += max(0, head - after)
        return remaining

    async def batches(self) -> AsyncIterator[list[Envelope]]:
        for service in self.urls:
            while True:
                after = self._after[service]
                page = await self._get(service, after, self.page)
                envelopes = [self._decode(event) for event in page["events"]]
                self._after[service] = page["next_after"]
                if envelopes:
                    yield [e for e in envelopes if e is not None]
                if page["next_after"] == after:
                    break

    def _decode(self, event: dict[str, Any]) -> Envelope | None:
        headers = [(k, v.encode()) for k, v in event["headers"].items()]
        try:
            return cloudevents.decode(json.dumps(event["payload"]).encode(), headers)
        except cloudevents.DecodeError:
            self.undecodable += 1
            return None
