"""Edge middleware for browsers and operators: request ids, CORS for the frontend origins,
gzip for clients that ask for it.

- Every request gets an `X-Request-Id` (the caller's, when it sends a sane one, else a new
  UUID). It is forwarded upstream (services log it) and returned on the response.
- CORS is off unless `GATEWAY_CORS_ORIGINS` lists origins (JSON list, e.g.
  `["https://app.example.com"]`); preflights are answered here, never proxied.
- Responses of at least `GATEWAY_GZIP_MIN_BYTES` are gzipped for clients sending
  `Accept-Encoding: gzip` (0 turns it off); a response already encoded upstream is left as is.
"""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.settings import GatewaySettings

REQUEST_ID = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
EXPOSED = [
    "ETag",
    "Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "Idempotent-Replayed",
    "X-Request-Id",
]


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        rid = next((v for k, v in headers if k == REQUEST_ID), None)
        if rid is None or _SANE.fullmatch(rid) is None:
            rid = str(uuid.uuid4()).encode()
            headers = [(k, v) for k, v in headers if k != REQUEST_ID] + [(REQUEST_ID, rid)]
            scope = {**scope, "headers": headers}
        value = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID]
                out.append((REQUEST_ID, value))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_id)


def install(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the middleware, outermost last: request id around CORS around gzip."""
    if settings.gzip_min_bytes > 0:
        app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_min_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=EXPOSED,
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware)
