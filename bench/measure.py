"""What the benchmark measures: records on the topics (for latency joins) and /proc figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from fulfilment_kit.contracts import topics
from fulfilment_kit.messaging import kafka
from fulfilment_kit.settings import KafkaSettings

from .platform import REPO, database_dsn, poll_until

ORDER_PLACED = "fulfilment.order.placed.v1"
STOCK_LOCKED = "fulfilment.stock.locked.v1"
PAYMENT_CAPTURED = "fulfilment.payment.captured.v1"
ORDER_PAID = "fulfilment.order.paid.v1"
SHIPMENT_SHIPPED = "fulfilment.shipment.shipped.v1"

# stage name -> (topic, ce_type) of the event that ends it; every stage starts at OrderPlaced.
STAGES: dict[str, tuple[str, str]] = {
    "placed->stock_locked": (topics.INVENTORY, STOCK_LOCKED),
    "placed->paid": (topics.PAYMENTS, PAYMENT_CAPTURED),
    "placed->shipped": (topics.SHIPPING, SHIPMENT_SHIPPED),
}


# --- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50/p95/p99 and max of a sample."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


# --- records on the topics ---------------------------------------------------------------


@dataclass(frozen=True)
class TailRecord:
    topic: str  # logical name, without the run's prefix
    partition: int
    offset: int
    key: str
    ce_type: str
    ce_time: float  # epoch seconds of the ce_time header (when the event was stored)
    sent_at: float  # epoch seconds of the record's timestamp (when the relay sent it)
    value_size: int
    headers: tuple[tuple[str, bytes], ...]


def _parse(logical: str, record: Any) -> TailRecord:
    headers = tuple((k, bytes(v)) for k, v in (record.headers or ()))
    attrs = {k: v.decode(errors="replace") for k, v in headers}
    ce_time = attrs.get("ce_time")
    return TailRecord(
        topic=logical,
        partition=record.partition,
        offset=record.offset,
        key=record.key.decode(errors="replace") if record.key else "",
        ce_type=attrs.get("ce_type", "?"),
        ce_time=datetime.fromisoformat(ce_time).timestamp() if ce_time else float("nan"),
        sent_at=record.timestamp / 1000,
        value_size=len(record.value or b""),
        headers=headers,
    )


class TopicTail:
    """Reads the platform's topics (read_committed) from the beginning for the whole run."""

    def __init__(self, logical_topics: Iterable[str] = topics.ALL) -> None:
        self.logical = {topics.physical(t): t for t in logical_topics}
        self.records: list[TailRecord] = []
        self.seen: dict[str, set[str]] = {}  # ce_type -> record keys
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = kafka.reader(KafkaSettings(), max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        self._consumer = consumer
        for topic in self.logical:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            self._partitions.extend(TopicPartition(topic, p) for p in sorted(parts))
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run(), name="topic-tail")

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batch.items():
                logical = self.logical[tp.topic]
                for raw in records:
                    record = _parse(logical, raw)
                    self.records.append(record)
                    self.seen.setdefault(record.ce_type, set()).add(record.key)

    def check(self) -> None:
        """Raise what stopped the tail, if it stopped."""
        if self._task is not None and self._task.done():
            self._task.result()

    async def wait_for(
        self,
        ce_type: str,
        keys: set[str],
        timeout: float,
        progress: Callable[[int], None],
        check: Callable[[], None] = lambda: None,
    ) -> set[str]:
        """Poll until every key has a record of `ce_type`; returns the keys still missing.
        `check` raises to give up early (e.g. a service process died)."""

        async def missing() -> set[str]:
            self.check()
            check()
            left = keys - self.seen.get(ce_type, set())
            progress(len(keys) - len(left))
            return left

        with contextlib.suppress(TimeoutError):
            await poll_until(
                missing, until=lambda left: not left, timeout=timeout, interval=0.25, what=ce_type
            )
        return await missing()

    async def _lag(self) -> tuple[int, int]:
        """(records-to-read summed over partitions, total end offset)."""
        assert self._consumer is not None
        ends = await self._consumer.end_offsets(self._partitions)
        lag = 0
        for tp in self._partitions:
            lag += max(0, ends[tp] - await self._consumer.position(tp))
        return lag, sum(ends.values())

    async def settle(self, quiet_s: float = 1.5, timeout: float = 60) -> bool:
        """Poll until read to the end and no topic grew for `quiet_s`; False at the deadline."""
        last_total = -1
        quiet_since = time.monotonic()

        async def quiet() -> bool:
            nonlocal last_total, quiet_since
            self.check()
            lag, total = await self._lag()
            now = time.monotonic()
            if lag or total != last_total:
                last_total, quiet_since = total, now
                return False
            return now - quiet_since >= quiet_s

        try:
            await poll_until(quiet, timeout=timeout, interval=0.25, what="topics quiet")
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def first_of(self, topic: str, ce_type: str) -> dict[str, TailRecord]:
        """The first record of `ce_type` on `topic` (logical name) per key."""
        found: dict[str, TailRecord] = {}
        for record in self.records:
            if record.ce_type == ce_type and record.topic == topic and record.key not in found:
                found[record.key] = record
        return found


@dataclass
class Latencies:
    stages: dict[str, list[float]]  # stage -> seconds, one per order that reached its end
    missing: dict[str, list[str]]  # stage -> order ids whose end event is not on the topic
    placed: dict[str, float]  # order id -> ce_time of OrderPlaced
    ends: dict[str, dict[str, float]]  # stage -> order id -> ce_time of the end event


def stage_latencies(tail: TopicTail, order_ids: Iterable[str]) -> Latencies:
    """Join OrderPlaced with each stage's end event by record key (the order id)."""
    ids = list(order_ids)
    placed = {k: r.ce_time for k, r in tail.first_of(topics.ORDERS, ORDER_PLACED).items()}
    stages: dict[str, list[float]] = {}
    missing: dict[str, list[str]] = {}
    ends: dict[str, dict[str, float]] = {}
    for stage, (topic, ce_type) in STAGES.items():
        end = {k: r.ce_time for k, r in tail.first_of(topic, ce_type).items()}
        ends[stage] = {k: end[k] for k in ids if k in end}
        stages[stage] = [end[k] - placed[k] for k in ids if k in end and k in placed]
        missing[stage] = [k for k in ids if k not in end]
    return Latencies(stages, missing, placed, ends)


# The chain of events an order's placed->shipped runs through, each the trigger of the
# next: (event, the service that stores it, its topic, its ce_type).
CHAIN: tuple[tuple[str, str, str, str], ...] = (
    ("OrderPlaced", "orders", topics.ORDERS, ORDER_PLACED),
    ("StockLocked", "inventory", topics.INVENTORY, STOCK_LOCKED),
    ("PaymentCaptured", "payments", topics.PAYMENTS, PAYMENT_CAPTURED),
    ("OrderPaid", "orders", topics.ORDERS, ORDER_PAID),
    ("ShipmentShipped", "shipping", topics.SHIPPING, SHIPMENT_SHIPPED),
)


def hop_latencies(tail: TopicTail, order_ids: Iterable[str]) -> dict[str, list[float]]:
    """placed->shipped split into hops: each relay's stored->sent, and each consumer's
    sent->stored of the event the previous one triggers (the record timestamps the relays
    set and the ce_time of the stored events, one machine's clock)."""
    ids = list(order_ids)
    hops: dict[str, list[float]] = {}
    previous: tuple[str, dict[str, TailRecord]] | None = None
    for event, service, topic, ce_type in CHAIN:
        records = tail.first_of(topic, ce_type)
        if previous is not None:
            before_event, before = previous
            hops[f"{before_event} sent -> {event} stored ({service})"] = [
                records[k].ce_time - before[k].sent_at for k in ids if k in records and k in before
            ]
        hops[f"{event} stored -> sent ({service} relay)"] = [
            records[k].sent_at - records[k].ce_time for k in ids if k in records
        ]
        previous = (event, records)
    return hops


def records_by_type(records: Iterable[TailRecord]) -> dict[str, int]:
    counts = Counter(f"{r.topic} {r.ce_type}" for r in records)
    return dict(sorted(counts.items()))


# --- /proc -------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    comm: str
    ticks: int  # utime + stime (all threads)
    starttime: int  # clock ticks after boot


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # after "pid (comm) ": state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
    return ProcStat(pid, int(fields[1]), comm, int(fields[11]) + int(fields[12]), int(fields[19]))


def cmdline(pid: int) -> str:
    """The process title (PostgreSQL backends show `postgres: user database host ...`)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def uptime_ticks() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * CLK_TCK


def process_table() -> dict[int, ProcStat]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                table[stat.pid] = stat
    return table


def tree(root: int, table: dict[int, ProcStat]) -> list[int]:
    """`root` and its live descendants."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def status_kb(pid: int, key: str) -> int | None:
    """A `Vm...`/`Rss...` line of /proc/<pid>/status, in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def pss_kb(pid: int) -> int | None:
    """Proportional set size (shared pages split among their users), else RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return status_kb(pid, "VmRSS")
    return status_kb(pid, "VmRSS")


def kafka_pid() -> int | None:
    """The local broker's JVM (deploy/local/stack.sh writes its pid file)."""
    try:
        pid = int((REPO / ".local" / "kafka" / "kafka.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if read_stat(pid) is not None else None


def postgres_pid() -> int | None:
    """The local stack's postmaster (deploy/local/stack.sh keeps its data dir in .local/pg):
    the other PostgreSQL servers on a shared machine are not this platform's."""
    try:
        pid = int((REPO / ".local" / "pg" / "data" / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    stat = read_stat(pid)
    return pid if stat is not None and stat.comm == "postgres" else None


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    idle = fields[3] + fields[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def machine_info() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    model = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpus_online": os.cpu_count(),
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": os.uname().release,
        "loadavg_at_start": os.getloadavg(),
    }


@dataclass
class GroupSample:
    cpu_s: float  # utime+stime of the group's processes since the first sample
    mem_kb: int  # Σ PSS (RSS where PSS is unreadable) of the group's processes
    processes: int


@dataclass
class ProcSampler:
    """Samples CPU and memory of process groups at a steady pace in a thread."""

    groups: dict[str, Callable[[dict[int, ProcStat]], list[int]]]  # name -> its pids
    interval_s: float = 1.0
    memory_every: int = 5
    """Memory (Σ PSS: reading smaps_rollup is most of the sampler's CPU, which the driver
    pays) is read every this many samples, and kept in between; CPU every sample."""
    samples: list[tuple[float, dict[str, GroupSample], tuple[float, float]]] = field(
        default_factory=list
    )
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _seen: dict[str, dict[tuple[int, int], list[int]]] = field(default_factory=dict)
    _born_after: float | None = None
    _memory: dict[str, int] = field(default_factory=dict)  # group -> Σ PSS kB last read

    def sample(self) -> tuple[float, dict[str, GroupSample], tuple[float, float]]:
        """CPU of each group since the first sample: every process it ever had, from the
        first sample (or its birth) to its last sighting; memory as last read (every
        `memory_every` samples)."""
        table = process_table()
        if self._born_after is None:
            self._born_after = uptime_ticks()
        result: dict[str, GroupSample] = {}
        pss: dict[int, int] = {}  # pid -> kB, read once per sample (groups overlap: postgres)
        read_memory = len(self.samples) % max(1, self.memory_every) == 0

        def memory(pid: int) -> int:
            if pid not in pss:
                pss[pid] = pss_kb(pid) or 0
            return pss[pid]

        for name, members in self.groups.items():
            pids = sorted(set(members(table)))
            seen = self._seen.setdefault(name, {})
            for pid in pids:
                stat = table[pid]
                key = (pid, stat.starttime)
                if key not in seen:
                    baseline = stat.ticks if stat.starttime < self._born_after else 0
                    seen[key] = [baseline, stat.ticks]
                seen[key][1] = stat.ticks
            cpu = sum(latest - baseline for baseline, latest in seen.values()) / CLK_TCK
            if read_memory or name not in self._memory:
                self._memory[name] = sum(memory(p) for p in pids)
            mem = self._memory[name]
            result[name] = GroupSample(cpu, mem, len(pids))
        entry = (time.time(), result, machine_cpu_s())
        self.samples.append(entry)
        return entry

    def start(self) -> None:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="proc-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):  # paced sampling, not synchronisation
            self.sample()

    def run_for(self, seconds: float) -> None:
        """Sample for `seconds` at the sampler's pace, blocking (run it in a thread)."""
        self.sample()
        deadline = time.monotonic() + seconds
        while not self._stop.wait(min(self.interval_s, max(0.0, deadline - time.monotonic()))):
            self.sample()
            if time.monotonic() >= deadline:
                break

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def usage(self) -> dict[str, dict[str, float]]:
        """Per group: CPU seconds between the first and last sample, peak sampled memory."""
        if len(self.samples) < 2:
            return {}
        (t0, _, m0), (t1, last, m1) = self.samples[0], self.samples[-1]
        wall = t1 - t0
        usage: dict[str, dict[str, float]] = {}
        for name in self.groups:
            cpu = last[name].cpu_s
            usage[name] = {
                "cpu_s": cpu,
                "cpu_pct_of_one_core": 100 * cpu / wall if wall else 0.0,
                "peak_mem_mib_sampled": max(s[1][name].mem_kb for s in self.samples) / 1024,
                "processes": max(s[1][name].processes for s in self.samples),
            }
        usage["machine"] = {
            "cpu_s": m1[0] - m0[0],
            "busy_pct": 100 * (m1[0] - m0[0]) / (m1[1] - m0[1]) if m1[1] > m0[1] else 0.0,
            "wall_s": wall,
        }
        return usage


XACT_COMMIT = "(transactions committed)"


def store_counts(databases: dict[str, str]) -> dict[str, dict[str, int]]:
    """Rows of every `*_events` / `*_tracking` table of each service's event store, and the
    database's committed transactions (under the key XACT_COMMIT)."""
    counts: dict[str, dict[str, int]] = {}
    for service, database in databases.items():
        with psycopg.connect(database_dsn(database), autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND "
                    "(table_name LIKE '%\\_events' OR table_name LIKE '%\\_tracking')"
                )
            ]
            counts[service] = {
                t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # type: ignore[index]
                for t in sorted(tables)
            }
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            counts[service][XACT_COMMIT] = int(row[0]) if row else 0
    return counts


def stack_info() -> dict[str, Any]:
    """Versions and the durability settings that bound the ceilings."""
    info: dict[str, Any] = {"kafka_partitions_per_topic": KafkaSettings().topic_partitions}
    jars = sorted((REPO / ".local" / "kafka" / "libs").glob("kafka_*.jar"))
    info["kafka_version"] = jars[0].stem.split("-", 1)[1] if jars else "external"
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(database_dsn("postgres"), autocommit=True) as conn,
    ):
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            row = conn.execute(f"SHOW {name}").fetchone()
            info[f"postgres_{name}"] = row[0] if row else None
    return info


def peak_rss_mib(pid: int | None) -> float | None:
    """VmHWM (peak resident set) of one process, in MiB."""
    if pid is None:
        return None
    hwm = status_kb(pid, "VmHWM")
    return hwm / 1024 if hwm is not None else None
