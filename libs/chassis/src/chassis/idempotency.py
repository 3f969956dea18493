"""`Idempotency-Key` on POST: the same key and body replays the first response; the same key
with another body is a 422; a request still running under the key is a 409. Keys are scoped
by tenant and kept 24 hours."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chassis.auth import Principal, Verifier
from chassis.db import Database
from chassis.problems import PROBLEM_JSON, ProblemError

log = logging.getLogger("chassis.idempotency")
HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255


def _problem(status: int, title: str, detail: str) -> tuple[int, bytes]:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return status, json.dumps(body).encode()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        key_raw = headers.get(HEADER)
        if not key_raw:
            await self.app(scope, receive, send)
            return
        key = key_raw.decode("latin-1")
        app_state = scope["app"].state
        principal = await self._principal(app_state.verifier, headers)
        if principal is None or len(key) > MAX_KEY_LENGTH:
            if principal is not None:
                status, body = _problem(
                    422, "Unprocessable content", f"Idempotency-Key longer than {MAX_KEY_LENGTH}"
                )
                await self._send(send, status, [(b"content-type", PROBLEM_JSON.encode())], body)
                return
            await self.app(scope, receive, send)  # the endpoint answers 401
            return

        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        digest = hashlib.sha256(
            scope["path"].encode() + b"?" + scope.get("query_string", b"") + b"\n" + body
        ).hexdigest()

        db: Database = app_state.db
        pool = await db.pool()
        async with pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 "
                "AND created_at < now() - interval '24 hours'",
                principal.tenant,
                key,
            )
            inserted = await conn.fetchval(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                principal.tenant,
                key,
                digest,
            )
            if not inserted:
                row = await conn.fetchrow(
                    "SELECT request_hash, status_code, response_headers, response_body "
                    "FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                    principal.tenant,
                    key,
                )
        if not inserted:
            await self._replay(send, row, digest)
            return

        sent = False

        async def replay_receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = 500
        resp_headers: list[tuple[bytes, bytes]] = []
        resp_body: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status, resp_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                resp_headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                resp_body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            async with pool.acquire() as conn:
                if status >= 500:
                    await conn.execute(
                        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                        principal.tenant,
                        key,
                    )
                else:
                    keep = [
                        [k.decode("latin-1"), v.decode("latin-1")]
                        for k, v in resp_headers
                        if k.lower() in (b"content-type", b"etag", b"location")
                    ]
                    await conn.execute(
                        "UPDATE idempotency_keys SET status_code = $3, response_headers = $4, "
                        "response_body = $5 WHERE tenant_id = $1 AND key = $2",
                        principal.tenant,
                        key,
                        status,
                        json.dumps(keep),
                        b"".join(resp_body),
                    )

    @staticmethod
    async def _principal(verifier: Verifier, headers: dict[bytes, bytes]) -> Principal | None:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return await verifier.verify(token.strip())
        except ProblemError:
            return None

    async def _replay(self, send: Send, row: Any, digest: str) -> None:
        if row is None:
            status, body = _problem(409, "Conflict", "idempotency key state lost; retry")
            await self._send(send, status, [(b"content-type", PROBLEM_JSON.encode())], body)
            return
        if row["request_hash"] != digest:
            status, body = _problem(
                422,
                "Unprocessable content",
                "Idempotency-Key was already used with a different request body",
            )
            await self._send(send, status, [(b"content-type", PROBLEM_JSON.encode())], body)
            return
        if row["status_code"] is None:
            status, body = _problem(
                409, "Conflict", "a request with this Idempotency-Key is still in progress"
            )
            await self._send(send, status, [(b"content-type", PROBLEM_JSON.encode())], body)
            return
        headers = [(k.encode(), v.encode()) for k, v in json.loads(row["response_headers"])]
        headers.append((b"idempotent-replayed", b"true"))
        await self._send(send, row["status_code"], headers, row["response_body"] or b"")

    @staticmethod
    async def _send(
        send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
