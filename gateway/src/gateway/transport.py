"""A lean HTTP/1.1 transport for the gateway's `httpx.AsyncClient`s.

httpx's default transport (httpcore) serialises its connection pool behind AnyIO locks and
polls every pooled socket on each request: measured here, a proxied request cost ~0.5 ms in
the transport alone and throughput *fell* as concurrency rose (~500 req/s at 32 concurrent
requests; encode/httpx#3215). This transport keeps httpx's client API (requests, responses,
timeouts, exceptions) and does the wire work on asyncio directly: a LIFO pool of keep-alive
connections per origin, an `asyncio.Protocol` per connection with the httptools (llhttp)
response parser, streamed bodies in both directions with read back-pressure.

Scope: HTTP/1.1 to known upstreams (plain or TLS); no proxies, no HTTP/2, no 1xx handling
beyond refusing to reuse such a connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class _Connection(asyncio.Protocol):
    """One TCP connection and the response currently being read on it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.error: Exception | None = None
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self.reset()

    def reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.reusable = True
        self.received_any = False
        self.skip_body = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            if not (self.skip_body and self.head_done):
                self.error = httpx.RemoteProtocolError(f"invalid response: {e}")
            self.reusable = False
            self.abort()
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self.reusable = False
        if self.head_done and not self.complete:
            names = {k for k, _ in self.headers}
            if b"content-length" in names or b"transfer-encoding" in names:
                self.error = httpx.RemoteProtocolError("connection closed before the body ended")
            else:
                self.complete = True  # a body delimited by the end of the connection
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if exc is not None and self.error is None and not self.complete:
            self.error = httpx.ReadError(str(exc))
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        self.reusable = self.reusable and self.parser.should_keep_alive() and self.status >= 200
        if self.skip_body:
            # llhttp cannot be told a response answers a HEAD: end here, never reuse.
            self.complete = True
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        if self.skip_body:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True

    # helpers
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            self.reusable = False
            raise httpx.ReadTimeout("the upstream did not answer in time") from None
        finally:
            self._waiter = None

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._read_paused and self.buffered < _LOW_WATER and self.transport:
            self._read_paused = False
            self.transport.resume_reading()
        return chunk

    async def write(self, data: bytes, timeout: float | None) -> None:
        if self.closed or self.transport is None:
            raise httpx.WriteError("connection closed")
        self.transport.write(data)
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._drain
            except TimeoutError:
                raise httpx.WriteTimeout("the upstream did not take the body in time") from None
            finally:
                self._drain = None
            if self.closed:
                raise httpx.WriteError("connection closed while writing")

    def abort(self) -> None:
        self.closed = True
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class _Pool:
    """The keep-alive connections to one origin (most recently used first)."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        *,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.slots = asyncio.Semaphore(max_connections)
        self.idle: list[_Connection] = []
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry

    async def acquire(self, timeouts: dict[str, Any]) -> tuple[_Connection, bool]:
        """A connection (and whether it was reused); holds one slot until `release`."""
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection to the upstream") from None
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive_expiry:
                return conn, True
            conn.abort()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, conn = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            self.slots.release()
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as e:
            self.slots.release()
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        return conn, False

    def release(self, conn: _Connection) -> None:
        if (
            conn.reusable
            and conn.complete
            and not conn.closed
            and not conn.chunks
            and len(self.idle) < self.max_idle
        ):
            conn.reset()
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        else:
            conn.abort()
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, pool: _Pool, conn: _Connection, read_timeout: float | None) -> None:
        self.pool, self.conn, self.read_timeout = pool, conn, read_timeout
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self.conn
        while True:
            if conn.chunks:
                yield conn.take()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            elif conn.closed:
                raise httpx.RemoteProtocolError("connection closed before the body ended")
            else:
                await conn.wait(self.read_timeout)

    async def aclose(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.conn)


class FastTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=FastTransport(...))`."""

    def __init__(
        self, *, max_connections: int = 256, max_keepalive: int = 128, keepalive_expiry: float = 4.0
    ) -> None:
        # keepalive_expiry stays under uvicorn's default 5 s keep-alive timeout, so an idle
        # connection is dropped here before the upstream closes it under a new request.
        self.max_connections = max_connections
        self.max_keepalive = max_keepalive
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[bytes, bytes, int], _Pool] = {}
        self._tls: ssl.SSLContext | None = None

    def _pool(self, url: httpx.URL) -> _Pool:
        scheme = url.raw_scheme
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        pool = self._pools.get(key)
        if pool is None:
            tls = None
            if scheme == b"https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            elif scheme != b"http":
                raise httpx.UnsupportedProtocol(f"unsupported scheme {url.scheme!r}")
            pool = self._pools[key] = _Pool(
                url.host,
                port,
                tls,
                max_connections=self.max_connections,
                max_idle=self.max_keepalive,
                keepalive_expiry=self.keepalive_expiry,
            )
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        pool = self._pool(request.url)
        head = b"".join(
            [
                request.method.encode("ascii"),
                b" ",
                request.url.raw_path,
                b" HTTP/1.1\r\n",
                *(b"%s: %s\r\n" % (k, v) for k, v in request.headers.raw),
                b"\r\n",
            ]
        )
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        fixed = isinstance(request.stream, httpx.ByteStream)
        for attempt in (1, 2):
            conn, reused = await pool.acquire(timeouts)
            conn.skip_body = request.method == "HEAD"
            try:
                await self._send(conn, request, head, chunked, timeouts.get("write"))
                while not conn.head_done:
                    if conn.error is not None:
                        raise conn.error
                    if conn.closed:
                        raise httpx.RemoteProtocolError("connection closed without a response")
                    await conn.wait(timeouts.get("read"))
            except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
                conn.abort()
                pool.release(conn)
                # A kept-alive connection the upstream closed meanwhile: try once more on a
                # new one when nothing was answered and the body can be sent again.
                if reused and attempt == 1 and not conn.received_any and fixed:
                    continue
                raise
            except BaseException:
                conn.abort()
                pool.release(conn)
                raise
            return httpx.Response(
                conn.status,
                headers=conn.headers,
                stream=_ResponseBody(pool, conn, timeouts.get("read")),
                extensions={"http_version": b"HTTP/1.1"},
                request=request,
            )
        raise AssertionError("unreachable")

    @staticmethod
    async def _send(
        conn: _Connection, request: httpx.Request, head: bytes, chunked: bool, timeout: float | None
    ) -> None:
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):
            body = b"".join([part async for part in stream])
            if chunked and body:
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            elif chunked:
                body = b"0\r\n\r\n"
            await conn.write(head + body, timeout)
            return
        await conn.write(head, timeout)
        assert isinstance(stream, httpx.AsyncByteStream)
        async for part in stream:
            if part:
                await conn.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part, timeout)
        if chunked:
            await conn.write(b"0\r\n\r\n", timeout)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
