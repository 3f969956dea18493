"""The streaming reverse proxy: one pooled `httpx.AsyncClient` per upstream, a raw ASGI
endpoint per route (no FastAPI dependency solving, no body parsing on the hot path).

Request: method, path, query, the body (streamed as it arrives) and a fixed set of headers go
to the upstream, plus the current trace context as `traceparent`. Response: status, headers
(hop-by-hop ones dropped) and the body (streamed, undecoded) come back. Upstream errors pass
through as they are; an upstream that cannot be reached is a 502, one that does not answer in
time a 504."""

from __future__ import annotations

import http.cookiejar
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry import propagate
from starlette.types import Message, Receive, Scope, Send

from chassis.problems import PROBLEM_JSON, ProblemError
from gateway.access import Access, RateLimited
from gateway.settings import GatewaySettings
from gateway.transport import FastTransport

log = logging.getLogger("gateway.proxy")

# Request headers the upstream gets from the client (ASGI header names are lower case).
FORWARDED_REQUEST_HEADERS = frozenset(
    {
        b"authorization",
        b"content-type",
        b"content-length",
        b"idempotency-key",
        b"if-match",
        b"if-none-match",
        b"x-origin",
        b"x-request-id",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"prefer",
        b"user-agent",
    }
)
# Response headers that belong to one connection, not to the message.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
_PROBLEM_HEADERS = [(b"content-type", PROBLEM_JSON.encode())]


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A shared client must never keep one caller's cookies for the next caller."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def _timeout(settings: GatewaySettings) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.proxy_connect_timeout,
        read=settings.proxy_read_timeout,
        write=settings.proxy_write_timeout,
        pool=settings.proxy_pool_timeout,
    )


def make_client(
    base_url: str, settings: GatewaySettings, transport: FastTransport | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=_timeout(settings),
        transport=transport
        or FastTransport(
            max_connections=settings.proxy_max_connections,
            max_keepalive=settings.proxy_max_keepalive,
        ),
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        follow_redirects=False,
        trust_env=False,
        base_url=base_url,
    )


class Direct:
    """The proxy's way to an upstream: requests straight to the client's transport. The
    client's own send (cookie jar, auth flow, redirects, URL merging) costs as much as the
    wire work, and a pass-through proxy needs none of it."""

    def __init__(self, base_url: str, transport: FastTransport, timeout: httpx.Timeout) -> None:
        self.base = base_url.rstrip("/")
        self.transport = transport
        self.extensions = {"timeout": timeout.as_dict()}

    async def send(
        self,
        method: str,
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
    ) -> httpx.Response:
        request = httpx.Request(
            method,
            self.base + url,
            headers=headers,
            content=body,
            extensions=self.extensions,
        )
        return await self.transport.handle_async_request(request)


async def open_clients(app: FastAPI) -> None:
    """Startup hook: one pooled transport per configured upstream, used by the proxy directly
    and by a client (admin calls, OpenAPI merge) over it."""
    settings: GatewaySettings = app.state.settings
    app.state.upstreams = {}
    app.state.direct = {}
    for name, url in settings.upstreams.items():
        transport = FastTransport(
            max_connections=settings.proxy_max_connections,
            max_keepalive=settings.proxy_max_keepalive,
        )
        app.state.upstreams[name] = make_client(url, settings, transport)
        app.state.direct[name] = Direct(url, transport, _timeout(settings))


async def close_clients(app: FastAPI) -> None:
    for client in getattr(app.state, "upstreams", {}).values():
        await client.aclose()


async def send_problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> None:
    payload: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        payload["instance"] = instance
    body = json.dumps(payload).encode()
    raw = [*_PROBLEM_HEADERS, (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ClientDisconnected(Exception):
    pass


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if chunk:
            yield chunk


class Upstream:
    """The ASGI endpoint of every route owned by one upstream."""

    def __init__(self, name: str, *, public: bool = False) -> None:
        self.name = name
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        access: Access = state.access
        forward: list[tuple[bytes, bytes]] = []
        authorization: str | None = None
        has_body = False
        for key, value in scope["headers"]:
            if key in FORWARDED_REQUEST_HEADERS:
                if key == b"authorization":
                    if self.public:
                        continue  # a public route never acts on a caller's credentials
                    authorization = value.decode("latin-1")
                elif key == b"content-length":
                    has_body = value != b"0"
                forward.append((key, value))
            elif key == b"transfer-encoding":
                has_body = True
        client = scope.get("client")
        try:
            if self.public:
                decision = access.admit_public(client[0] if client else "unknown")
            else:
                _, decision = await access.admit(authorization)
        except RateLimited as e:
            await send_problem(
                send, 429, e.title, str(e.detail), e.decision.headers(), scope["path"]
            )
            return
        except ProblemError as e:
            await send_problem(
                send,
                e.status,
                e.title,
                str(e.detail or e.title),
                {"WWW-Authenticate": "Bearer"} if e.status == 401 else None,
                scope["path"],
            )
            return

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        forward += [(k.encode(), v.encode()) for k, v in carrier.items()]
        if client:
            forward.append((b"x-forwarded-for", client[0].encode()))
        if not any(k == b"accept-encoding" for k, _ in forward):
            forward.append((b"accept-encoding", b"identity"))

        path = scope.get("raw_path") or scope["path"].encode()
        path = path.split(b"?", 1)[0]
        query = scope.get("query_string", b"")
        url = (path + b"?" + query if query else path).decode("latin-1")

        upstream: Direct = state.direct[self.name]
        try:
            response = await upstream.send(
                scope["method"], url, forward, _request_body(receive) if has_body else None
            )
        except httpx.TimeoutException:
            log.warning("upstream %s timed out on %s %s", self.name, scope["method"], url)
            await send_problem(
                send,
                504,
                "Gateway timeout",
                f"the {self.name} service did not answer in time",
                instance=scope["path"],
            )
            return
        except httpx.TransportError as e:
            log.warning("upstream %s unreachable: %r", self.name, e)
            await send_problem(
                send,
                502,
                "Bad gateway",
                f"the {self.name} service is not reachable",
                instance=scope["path"],
            )
            return
        except ClientDisconnected:
            return
        try:
            headers = [
                (k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP
            ]
            if decision is not None:
                headers.append((b"ratelimit-limit", str(decision.limit).encode()))
                headers.append((b"ratelimit-remaining", str(decision.remaining).encode()))
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": headers}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            end: Message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(end)
        finally:
            await response.aclose()
