"""The faults, injected one after another while orders flow, each with its start, its end
and (measured afterwards on the topics' throughput) the time until the platform is back to
steady throughput."""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings
from tests.chaos.harness import PROVIDER_TIMEOUT_S, ChaosPlatform, Replica
from tests.chaos.watch import EventWatch
from tests.e2e.platform import PROCESSES
from tests.support import stack

POISON_PREFIX = "chaos-poison-"
KINDS = ("kill", "scale", "kafka", "postgres", "provider", "poison")
PROGRESS = Path(__file__).resolve().parents[2] / ".local" / "chaos" / "progress.log"
BASELINE_S = 15.0
WINDOW_S = 5.0
STEADY = 0.6
"""Recovered: the events/s over the last WINDOW_S seconds back to this share of the rate in
the BASELINE_S seconds before the fault."""


@dataclass
class Fault:
    name: str
    started: float
    ended: float | None = None
    replica_ready_s: float | None = None
    """For a killed/added replica: seconds from the fault until it answered ready."""
    recovered: float | None = None
    baseline_rate: float = 0.0
    wall_time: str = field(default_factory=lambda: datetime.now(UTC).strftime("%H:%M:%S"))

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered is None else round(self.recovered - self.started, 1)


@dataclass
class Poison:
    """Records injected on purpose that no consumer can decode: each must be dead-lettered
    by every consumer group of its topic, and nothing else may be."""

    ce_ids: dict[str, str] = field(default_factory=dict)  # ce_id -> logical topic

    async def inject(self, topic: str, count: int) -> None:
        producer = kafka.producer(KafkaSettings())
        await producer.start()
        try:
            for _ in range(count):
                ce_id = f"{POISON_PREFIX}{uuid.uuid4()}"
                headers = [
                    ("ce_specversion", b"1.0"),
                    ("ce_id", ce_id.encode()),
                    ("ce_type", b"fulfilment.order.placed.v1"),
                    ("ce_source", b"/chaos"),
                    ("content-type", b"application/json"),
                ]
                await producer.send_and_wait(
                    topics.physical(topic),
                    value=b'{"not": "an order", truncated',
                    key=str(uuid.uuid4()).encode(),
                    headers=headers,
                )
                self.ce_ids[ce_id] = topic
        finally:
            await producer.stop()


class Faults:
    def __init__(self, platform: ChaosPlatform, watch: EventWatch, *, full: bool) -> None:
        self.platform = platform
        self.watch = watch
        self.full = full
        self.log: list[Fault] = []
        self.poison = Poison()
        self._restarts: list[asyncio.Task[None]] = []

    def _begin(self, name: str) -> Fault:
        fault = Fault(name, self.watch.now())
        self.log.append(fault)
        PROGRESS.parent.mkdir(parents=True, exist_ok=True)
        with PROGRESS.open("a") as progress:  # to follow a long run: tail -f
            progress.write(f"{fault.wall_time} {fault.started:7.1f} s  {name}\n")
        return fault

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the fault's duration / the spacing between faults

    async def _ready_later(self, fault: Fault, replica: Replica) -> None:
        await self.platform.ready(replica, timeout=300)
        fault.replica_ready_s = round(self.watch.now() - fault.started, 1)

    async def kill(self, replica: Replica, pause_s: float) -> None:
        """SIGKILL (no cleanup, like a node dying), then the same replica started again. Its
        twins are ready first (as a PodDisruptionBudget keeps one replica up)."""
        twins = [r for r in self.platform.live(replica.service) if r is not replica]
        await asyncio.gather(*(self.platform.ready(r, timeout=300) for r in twins))
        fault = self._begin(f"SIGKILL {replica.name}, restarted after {pause_s:g} s")
        await asyncio.to_thread(replica.process.kill)
        await self._pause(pause_s)
        replica.process.start()
        fault.ended = self.watch.now()
        self._restarts.append(asyncio.create_task(self._ready_later(fault, replica)))

    async def scale_out_and_in(self, service: str) -> None:
        fault = self._begin(f"replica added to {service} (rebalance)")
        added = await self.platform.add_replica(service)
        await self._ready_later(fault, added)
        fault.ended = self.watch.now()
        await self._pause(6)
        fault = self._begin(
            f"replica {self.platform.replicas[service][0].name} removed (rebalance)"
        )
        await asyncio.to_thread(self.platform.remove_replica, self.platform.replicas[service][0])
        fault.ended = self.watch.now()

    async def kafka_restart(self, down_s: float) -> None:
        fault = self._begin(f"Kafka broker stopped {down_s:g} s, restarted")
        await asyncio.to_thread(stack.kafka_down)
        await self._pause(down_s)
        await asyncio.to_thread(stack.kafka_up)
        fault.ended = self.watch.now()

    async def postgres_restart(self, down_s: float) -> None:
        fault = self._begin(f"PostgreSQL stopped {down_s:g} s, restarted")
        await asyncio.to_thread(stack.pg_down)
        await self._pause(down_s)
        await asyncio.to_thread(stack.pg_up)
        fault.ended = self.watch.now()

    async def postgres_down_during_rebalance(self, service: str, down_s: float) -> None:
        """A replica leaves and comes back (two rebalances) while PostgreSQL is away: the
        partitions move to replicas that cannot read their tracked offsets."""
        replica = self.platform.replicas[service][-1]
        fault = self._begin(f"PostgreSQL down {down_s:g} s during a {service} rebalance")
        await asyncio.to_thread(replica.process.stop)
        await asyncio.to_thread(stack.pg_down)
        replica.process.start()
        await self._pause(down_s)
        await asyncio.to_thread(stack.pg_up)
        fault.ended = self.watch.now()
        self._restarts.append(asyncio.create_task(self._ready_later(fault, replica)))

    async def slow_provider(self, seconds: float) -> None:
        delay = PROVIDER_TIMEOUT_S + 1.5
        fault = self._begin(
            f"card provider answers after {delay:g} s (> timeout) for {seconds:g} s"
        )
        self.platform.provider.ledger.charge_delay_s = delay
        await self._pause(seconds)
        self.platform.provider.ledger.charge_delay_s = 0.0
        fault.ended = self.watch.now()

    async def inject_poison(self) -> None:
        fault = self._begin("poison records injected (4 undecodable, on purpose)")
        # order.placed on the orders topic: every consumer group of that topic decodes it
        # (a group that does not react to a type skips it undecoded, rightly)
        await self.poison.inject(topics.ORDERS, 4)
        fault.ended = self.watch.now()

    def schedule(self) -> list[Callable[[], Awaitable[None]]]:
        """Every fault once (CHAOS_FAULTS=kill,scale,kafka,postgres,provider,poison picks some;
        none: traffic alone); the full run kills every replica of every process in turn."""
        chosen = os.environ.get("CHAOS_FAULTS", "all")
        kinds = set(KINDS) if chosen == "all" else set(chosen.split(",")) & set(KINDS)
        steps: list[Callable[[], Awaitable[None]]] = []
        if "kill" in kinds:
            # the full run: every replica of every process; the CI-sized run: one replica of
            # each process (first or second, alternating)
            rounds = range(self.platform.replicas_per_service) if self.full else range(1)
            for index in rounds:
                for turn, name in enumerate(PROCESSES):
                    replica = self.platform.replicas[name][(index + turn) % 2]
                    steps.append(functools.partial(self.kill, replica, 2.0))
                    steps.append(functools.partial(self._pause, 4 if self.full else 2.5))
        pause = functools.partial(self._pause, 8)
        if "poison" in kinds:
            steps += [self.inject_poison]
        if "scale" in kinds:
            steps += [pause, functools.partial(self.scale_out_and_in, "inventory")]
        if "kafka" in kinds:
            steps += [pause, functools.partial(self.kafka_restart, 8)]
        if "postgres" in kinds:
            steps += [pause, functools.partial(self.postgres_restart, 5)]
            steps += [pause, functools.partial(self.postgres_down_during_rebalance, "payments", 10)]
        if "provider" in kinds:
            steps += [pause, functools.partial(self.slow_provider, 15)]
        return steps

    async def run(self) -> None:
        for step in self.schedule():
            await step()

    async def settle(self) -> None:
        """Every restarted replica answered ready (or the wait failed loudly)."""
        await asyncio.gather(*self._restarts)

    def measure(self) -> None:
        """Time to recover of each fault, from the topics' events per second."""
        now = self.watch.now()
        for fault in self.log:
            fault.baseline_rate = self.watch.rate(fault.started - BASELINE_S, fault.started)
            t = max(fault.ended or fault.started, fault.started + 1)
            while t <= now:
                if self.watch.rate(t - WINDOW_S, t) >= STEADY * fault.baseline_rate:
                    fault.recovered = t
                    break
                t += 1
