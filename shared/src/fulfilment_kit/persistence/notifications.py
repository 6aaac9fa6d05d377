"""Wake-ups on commits: PostgreSQL LISTEN/NOTIFY on the event store's channel, one listener
connection per process and database, fanned out to every loop that follows the log.

eventsourcing's PostgreSQL recorder already issues `NOTIFY <events table>` inside every
transaction that inserts events (`PostgresApplicationRecorder._notify_channel`), so a
notification is delivered, after the commit, to every session listening on the channel: in
this replica and in every other replica of the service. The background loops (the outbox
relay, the log followers' loops, the samplers) wait on a `Wakeup` that a notification sets,
with a slow fallback poll, instead of polling every few milliseconds.

The listener runs in the event loop on an asyncio psycopg connection (it never blocks the
loop). When its connection breaks (a database restart) it reconnects with backoff and then
wakes every subscriber once, since notifications sent while it was away are lost. On the
in-memory and SQLite stores there is no listener: in-process wake-ups and the fallback polls
do the job (one process). See docs/adr/0024-wake-ups-by-listen-notify.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import structlog
from eventsourcing.application import Application
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import sql

from fulfilment_kit.persistence import SESSION_CONNECTION

log = structlog.get_logger(__name__)

OnCommit = Callable[[], None]
"""Called in the event loop after a commit to the followed notification log (any process)."""


class Wakeup:
    """An event any thread may set; a loop waits on it with a timeout between its rounds."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_round = 0.0
        self._pending = False

    def bind(self) -> asyncio.Event:
        """Attach to the running loop (done by the first `wait`; a wake before counts)."""
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
            if self._pending:
                self._event.set()
        return self._event

    def set(self) -> None:
        """Wake the waiting loop (from the loop's thread or any other)."""
        loop, event = self._loop, self._event
        if loop is None or event is None:
            self._pending = True  # before the first wait: it returns at once
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout_s: float, *, spacing_s: float = 0.0) -> bool:
        """Wait until set or `timeout_s` passed; returns whether it was set. Returns no sooner
        than `spacing_s` after the previous round, so a burst of commits makes one round; a
        round is a return on a wake-up or from `wait(0)` (a loop that just did work), not a
        timeout, so the first commit after a quiet spell is read at once.
        The event is cleared on return: a commit during the round that follows wakes again."""
        event = self.bind()
        woken = event.is_set()
        if not woken and timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout_s)
                woken = True
        rest = self._last_round + spacing_s - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)
        event.clear()
        if woken or timeout_s <= 0:
            self._last_round = time.monotonic()
        return woken


class _Listener:
    """One LISTEN connection to one database; calls the subscribers of each channel."""

    def __init__(self, key: tuple[Any, ...], params: dict[str, Any]) -> None:
        self.key = key
        self.params = params
        self.subscribers: dict[str, list[OnCommit]] = {}
        self.connected = False
        self.connections = 0
        """How many times it has connected (a test can watch a reconnect)."""
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # a channel was added: LISTEN to it

    def add(self, channel: str, callback: OnCommit) -> None:
        callbacks = self.subscribers.setdefault(channel, [])
        if not callbacks:
            self._changed.set()
        callbacks.append(callback)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="log-notifications")

    def remove(self, channel: str, callback: OnCommit) -> bool:
        """Unsubscribe; True when nobody is left (then the listener is stopped)."""
        callbacks = self.subscribers.get(channel, [])
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)
        if not callbacks:
            self.subscribers.pop(channel, None)
        return not self.subscribers

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None

    def _notify(self, channels: list[str] | None = None) -> None:
        for channel, callbacks in list(self.subscribers.items()):
            if channels is None or channel in channels:
                for callback in list(callbacks):
                    try:
                        callback()
                    except Exception as exc:  # one subscriber must not starve the others
                        log.warning("wake-up callback failed", error=f"{type(exc).__name__}")

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    backoff = 0.5  # it was up: try again soon
                    log.warning(
                        "log notifications lost their connection; fallback polls until back",
                        error=f"{type(exc).__name__}: {exc}"[:200],
                    )
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(
            **self.params, **SESSION_CONNECTION, application_name="fulfil-log-notifications"
        )
        async with conn:
            listening: set[str] = set()
            while True:
                self._changed.clear()
                added = [c for c in self.subscribers if c not in listening]
                for channel in added:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    listening.add(channel)
                if not self.connected:
                    self.connected = True
                    self.connections += 1
                    if self.connections > 1:
                        log.info("log notifications reconnected")
                    self._notify()  # whatever was committed while we were away
                elif added:
                    self._notify(added)
                await self._receive(conn)

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hand out notifications until a channel is added (then LISTEN to it too).

        Waits for the socket to be readable, then reads what arrived: nothing runs while
        nothing arrives (psycopg's own `notifies()` wakes ten times a second to look)."""
        pgconn = conn.pgconn
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        readable.set()  # read what arrived with the LISTEN first
        # The number, not `pgconn.socket`: once libpq dropped a broken connection the
        # attribute raises, and a reader left on the closed descriptor spins the loop.
        fd = pgconn.socket
        loop.add_reader(fd, readable.set)
        try:
            while not self._changed.is_set():
                if not readable.is_set():
                    waiters = {
                        asyncio.ensure_future(self._changed.wait()),
                        asyncio.ensure_future(readable.wait()),
                    }
                    try:
                        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in waiters:
                            waiter.cancel()
                    continue
                readable.clear()
                pgconn.consume_input()  # raises when the connection broke
                channels = []
                while (notify := pgconn.notifies()) is not None:
                    channels.append(notify.relname.decode())
                if channels:
                    self._notify(list(dict.fromkeys(channels)))
        finally:
            with contextlib.suppress(Exception):  # already closed by libpq
                loop.remove_reader(fd)


_LISTENERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _Listener]]
_LISTENERS = weakref.WeakKeyDictionary()


def channel_of(app: Application[Any]) -> tuple[str, dict[str, Any]] | None:
    """The NOTIFY channel of `app`'s event store and its connection parameters (None when
    the store has no notifications: in memory, SQLite)."""
    recorder = app.recorder
    if not isinstance(recorder, PostgresApplicationRecorder):
        return None
    kwargs = recorder.datastore.pool.kwargs
    assert isinstance(kwargs, dict)
    params = {k: v for k, v in kwargs.items() if k != "row_factory"}
    return recorder.channel_name, params


def listener_for(app: Application[Any]) -> _Listener | None:
    """This process's listener of `app`'s database, if one is running (tests, metrics)."""
    found = channel_of(app)
    if found is None:
        return None
    _, params = found
    listeners = _LISTENERS.get(asyncio.get_running_loop(), {})
    return listeners.get(_key(params))


def _key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in params.items()))


@contextlib.asynccontextmanager
async def on_commit(app: Application[Any], callback: OnCommit) -> AsyncIterator[bool]:
    """Call `callback` (in the event loop) after each commit to `app`'s notification log by
    any process, and once after the listener (re)connected. Yields whether the store has
    notifications (False on the in-memory and SQLite stores: rely on the fallback poll)."""
    found = channel_of(app)
    if found is None:
        yield False
        return
    channel, params = found
    listeners = _LISTENERS.setdefault(asyncio.get_running_loop(), {})
    key = _key(params)
    listener = listeners.get(key)
    if listener is None:
        listener = listeners[key] = _Listener(key, params)
    listener.add(channel, callback)
    try:
        yield True
    finally:
        if listener.remove(channel, callback):
            if listeners.get(key) is listener:
                del listeners[key]
            await listener.stop()
