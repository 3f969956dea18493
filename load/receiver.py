"""The partner side of the load test: a local webhook receiver (raw ASGI under uvicorn).

`POST /hooks/<name>` is one subscription's endpoint: it verifies the Standard Webhooks
signature with the secret registered for that name, remembers the event id (duplicates are
legal, at-least-once, but counted) and how long after the event's own time it arrived, and
answers 204. `POST /secrets` registers `{name: secret}`; `GET /stats` returns the counts and
the delivery-lag percentiles. Kept deliberately cheap so it measures the gateway's sender,
not itself.

Run: `python load/receiver.py --port 9000`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Hooks:
    """Per-subscription counters; one instance per receiver process."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.seen: dict[str, set[str]] = {}
        self.received: dict[str, int] = {}
        self.bad_signature = 0
        self.lag_ms: list[float] = []

    def register(self, secrets: dict[str, str]) -> None:
        for name, secret in secrets.items():
            self.keys[name] = base64.b64decode(secret.removeprefix("whsec_"))
            self.seen.setdefault(name, set())
            self.received.setdefault(name, 0)

    def verify(self, name: str, headers: dict[str, str], body: bytes) -> bool:
        key = self.keys.get(name)
        msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        if key is None or not msg_id or not ts:
            return False
        expected = base64.b64encode(
            hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        return any(
            sig.startswith("v1,") and hmac.compare_digest(sig[3:], expected)
            for sig in headers.get("webhook-signature", "").split()
        )

    def accept(self, name: str, headers: dict[str, str], body: bytes) -> int:
        if not self.verify(name, headers, body):
            self.bad_signature += 1
            return 401
        self.received[name] += 1
        self.seen[name].add(headers["webhook-id"])
        event_time = json.loads(body).get("time")
        if event_time:
            sent = datetime.fromisoformat(event_time.replace("Z", "+00:00"))
            self.lag_ms.append((datetime.now(UTC) - sent).total_seconds() * 1000)
        return 204

    def stats(self) -> dict[str, Any]:
        lags = sorted(self.lag_ms)

        def pct(p: float) -> float | None:
            return round(lags[min(len(lags) - 1, int(p * len(lags)))], 1) if lags else None

        return {
            "received": sum(self.received.values()),
            "unique": sum(len(s) for s in self.seen.values()),
            "per_subscription": {
                n: {"received": self.received[n], "unique": len(self.seen[n])} for n in self.keys
            },
            "bad_signature": self.bad_signature,
            "lag_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": lags[-1] if lags else None},
        }


HOOKS = Hooks()


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _reply(send: Send, status: int, payload: Any = None) -> None:
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = [(b"content-type", b"application/json")] if body else []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    body = await _body(receive)
    if method == "POST" and path.startswith("/hooks/"):
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        await _reply(send, HOOKS.accept(path.removeprefix("/hooks/"), headers, body))
    elif method == "POST" and path == "/secrets":
        HOOKS.register(json.loads(body))
        await _reply(send, 204)
    elif method == "GET" and path == "/stats":
        await _reply(send, 200, HOOKS.stats())
    else:
        await _reply(send, 404)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
