"""A lean HTTP/1.1 client for the load driver: one keep-alive connection over asyncio
streams, requests encoded once before they are sent, every response read whole.

httpx spends about a millisecond of CPU per request (its request/response models, header
normalisation, the pool); on a two-core machine the driver's CPU is taken from the platform
it measures. This client does only what the driver needs: POST a pre-encoded request, read
the status line, headers and a Content-Length or chunked body, reconnect when the server
closes. Not a general client (no TLS, redirects, compression, proxies).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Connection", "Reply", "encode_post"]

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[bytes, bytes]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes


def encode_post(host: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The bytes of `POST path` with a JSON `body` (Content-Length framing, keep-alive)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    lines.append("Content-Type: application/json")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """One keep-alive connection to `base_url` (http only), opened on first use."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"plain http://host:port URLs only, not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.authority = url.netloc
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> Reply:
        """Send one encoded request and read its whole reply (a broken keep-alive connection
        is closed; the next call opens a new one)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(request)
        except BaseException:
            await self.close()
            raise

    async def _exchange(self, request: bytes) -> Reply:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, limit=_MAX_HEAD
            )
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError(f"not an HTTP/1.x response: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in rest[:-4].split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await _chunked(reader)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # delimited by the end of the connection
            body = await reader.read()
            headers[b"connection"] = b"close"
        if headers.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0":
            await self.close()
        return Reply(status, headers, body)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
