"""The sending loop: a chassis `Scheduler` that claims due (subscription, aggregate) queues,
sends their pending deliveries in order, and records every attempt.

- Claim: a short transaction takes due queues of active subscriptions (`FOR UPDATE SKIP
  LOCKED`, so replicas share the work) and leases them (`next_attempt_at = now + lease`,
  `lease = lease + 1`) in the scheduler's transaction, which the chassis commits; sending runs
  after it (`AfterCommit`), so no transaction stays open while HTTP requests run.
  A replica that dies mid-send loses its lease; the deliveries go out again (at least once).
- Send: per queue, the oldest pending deliveries one after another (at most
  `webhooks_burst`, within half the lease), stopping at the first failure: a failing
  delivery holds back the later events of its aggregate for that subscription, never other
  aggregates or subscriptions. Queues are sent concurrently (`webhooks_concurrency`).
- Record: one transaction writes the attempts (status, attempts, response code, latency, the
  first 1 KB of the response) and reschedules each queue, fenced by its lease number (a
  queue re-claimed after an expired lease is not overwritten by the late sender). A failure
  waits `webhooks_retry_schedule[attempt - 1]` (+- jitter); when the schedule is exhausted
  the delivery is `failed` and the subscription is disabled (`disabled_reason`, a warning in
  the log, and the event `crm.customers.webhook_subscription.disabled.v1` in the same
  transaction). Its other pending deliveries wait for it to be re-enabled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.db import Database, unit_of_work
from chassis.events import OutgoingEvent
from chassis.scheduler import AfterCommit, Scheduler
from crm.customers.v1.customers_pb2 import WebhookSubscriptionDisabled
from gateway.outgoing import gateway_event
from gateway.settings import GatewaySettings
from gateway.webhooks import signing, ssrf
from gateway.webhooks.fanout import add_waker, remove_waker

log = logging.getLogger("gateway.webhooks")

DISABLED = "crm.customers.webhook_subscription.disabled.v1"

EXCERPT_BYTES = 1024
USER_AGENT = "crm-webhooks/1.0"

_CLAIM = """
UPDATE webhook_queues q
SET next_attempt_at = :lease_until, lease = q.lease + 1
FROM (
    SELECT c.subscription_id, c.aggregate_key FROM webhook_queues c
    JOIN webhook_subscriptions s ON s.id = c.subscription_id AND s.active
    WHERE c.next_attempt_at <= :now
    ORDER BY c.next_attempt_at
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
) AS due
WHERE q.subscription_id = due.subscription_id AND q.aggregate_key = due.aggregate_key
RETURNING q.subscription_id, q.aggregate_key, q.lease, q.bumps
"""

_LOAD = """
SELECT d.id, d.subscription_id, d.aggregate_key, d.attempts, d.event_id,
       e.ce_type, e.source, e.aggregate_id, e.version, e.time, e.tenant_id, e.data::text
FROM unnest(CAST(:subs AS uuid[]), CAST(:keys AS text[])) AS k(s, a)
CROSS JOIN LATERAL (
    SELECT * FROM webhook_deliveries w
    WHERE w.subscription_id = k.s AND w.aggregate_key = k.a AND w.status = 'pending'
    ORDER BY w.id LIMIT :burst
) AS d
LEFT JOIN event_log e ON e.position = d.event_position
ORDER BY d.id
"""

_SUBSCRIPTIONS = """
SELECT id, url, secret, previous_secret, previous_secret_expires_at
FROM webhook_subscriptions WHERE id = ANY(CAST(:ids AS uuid[]))
"""

_RECORD = """
UPDATE webhook_deliveries d
SET status = u.status, attempts = d.attempts + 1, last_attempt_at = u.at,
    next_attempt_at = u.next_at,
    delivered_at = CASE WHEN u.status = 'delivered' THEN u.at END,
    response_code = u.code, latency_ms = u.latency, response_excerpt = u.excerpt,
    error = u.error
FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:ats AS timestamptz[]),
            CAST(:next_ats AS timestamptz[]), CAST(:codes AS int[]), CAST(:latencies AS int[]),
            CAST(:excerpts AS text[]), CAST(:errors AS text[]))
     AS u(id, status, at, next_at, code, latency, excerpt, error)
WHERE d.id = u.id AND d.status = 'pending'
"""

# A queue with nothing pending goes away, unless work arrived since it was claimed (bumps).
_DROP_EMPTY = """
DELETE FROM webhook_queues q
USING unnest(CAST(:subs AS uuid[]), CAST(:keys AS text[]), CAST(:leases AS bigint[]),
             CAST(:bumps AS bigint[])) AS u(s, k, l, b)
WHERE q.subscription_id = u.s AND q.aggregate_key = u.k AND q.lease = u.l AND q.bumps = u.b
  AND NOT EXISTS (
    SELECT 1 FROM webhook_deliveries d
    WHERE d.subscription_id = u.s AND d.aggregate_key = u.k AND d.status = 'pending')
"""

_RESCHEDULE = """
UPDATE webhook_queues q SET next_attempt_at = u.next_at
FROM unnest(CAST(:subs AS uuid[]), CAST(:keys AS text[]), CAST(:leases AS bigint[]),
            CAST(:next_ats AS timestamptz[])) AS u(s, k, l, next_at)
WHERE q.subscription_id = u.s AND q.aggregate_key = u.k AND q.lease = u.l
"""

_DISABLE = """
UPDATE webhook_subscriptions
SET active = false, disabled_at = :now, disabled_reason = :reason, version = version + 1,
    updated_at = :now
WHERE id = :id AND active
RETURNING tenant_id, url, version
"""

_NEXT_DUE = """
SELECT q.next_attempt_at FROM webhook_queues q
JOIN webhook_subscriptions s ON s.id = q.subscription_id AND s.active
ORDER BY q.next_attempt_at LIMIT 1
"""


def disabled_event(
    subscription_id: str, tenant: str, url: str, version: int, reason: str, now: datetime
) -> OutgoingEvent:
    """The event that tells the tenant (and its partners) a subscription was switched off."""
    at = Timestamp()
    at.FromDatetime(now)
    msg = WebhookSubscriptionDisabled(
        subscription_id=subscription_id, url=url, reason=reason, disabled_at=at
    )
    return gateway_event(
        msg,
        tenant=tenant,
        aggregate_id=subscription_id,
        version=version,
        origin="webhooks",
        now=now,
    )


@dataclass
class Claim:
    subscription_id: uuid.UUID
    aggregate_key: str
    lease: int
    bumps: int
    deliveries: list[Any] = field(default_factory=list)


@dataclass
class Subscription:
    id: uuid.UUID
    url: str
    secrets: list[str]


@dataclass
class Attempt:
    delivery_id: int
    status: str  # delivered | pending (will be retried) | failed (given up)
    at: datetime
    next_at: datetime | None = None
    code: int | None = None
    latency_ms: int | None = None
    excerpt: str | None = None
    error: str | None = None


def cloudevent(row: Any) -> bytes:
    """CloudEvents 1.0 structured JSON of a logged event (the data in its protobuf JSON)."""
    head = {
        "specversion": "1.0",
        "id": str(row.event_id),
        "source": row.source,
        "type": row.ce_type,
        "time": row.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "subject": row.aggregate_id,
        "datacontenttype": "application/json",
        "tenant": row.tenant_id,
        "sequence": str(row.version),
    }
    data: str = row.data
    return (json.dumps(head, separators=(",", ":"))[:-1] + ',"data":' + data + "}").encode()


class Dispatcher:
    def __init__(self, db: Database, settings: GatewaySettings) -> None:
        self.db = db
        self.settings = settings
        self.schedule = list(settings.webhooks_retry_schedule)
        self.allow_private = settings.webhooks_private_targets_allowed
        self.client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(
                settings.webhooks_timeout, connect=settings.webhooks_connect_timeout
            ),
            limits=httpx.Limits(
                max_connections=settings.webhooks_concurrency,
                max_keepalive_connections=settings.webhooks_concurrency,
            ),
            headers={"User-Agent": USER_AGENT},
        )
        self.scheduler = Scheduler(
            "webhooks",
            db,
            self.fire,
            next_due=self.next_due,
            poll_seconds=settings.webhooks_poll_seconds,
            batch_size=settings.webhooks_batch_size,
        )
        self._limit = asyncio.Semaphore(settings.webhooks_concurrency)
        self._deadline = settings.webhooks_connect_timeout + settings.webhooks_timeout

    async def start(self) -> None:
        add_waker(self.scheduler.wake)
        await self.scheduler.start()

    async def stop(self) -> None:
        remove_waker(self.scheduler.wake)
        await self.scheduler.stop()
        await self.client.aclose()

    async def next_due(self, session: AsyncSession) -> datetime | None:
        due: datetime | None = (await session.execute(text(_NEXT_DUE))).scalar()
        return due

    def backoff(self, attempts: int) -> float:
        """Seconds before the retry after the `attempts`-th failed attempt."""
        base = self.schedule[attempts - 1]
        jitter = self.settings.webhooks_retry_jitter
        return max(0.0, base * (1 + random.uniform(-jitter, jitter)))

    async def fire(self, session: AsyncSession, now: datetime, limit: int) -> int | AfterCommit:
        lease_until = now + timedelta(seconds=self.settings.webhooks_lease_seconds)
        claimed = (
            await session.execute(
                text(_CLAIM), {"now": now, "lease_until": lease_until, "limit": limit}
            )
        ).all()
        if not claimed:
            return 0
        claims = {(r[0], r[1]): Claim(r[0], r[1], r[2], r[3]) for r in claimed}
        keys = list(claims)
        for row in await session.execute(
            text(_LOAD),
            {
                "subs": [k[0] for k in keys],
                "keys": [k[1] for k in keys],
                "burst": self.settings.webhooks_burst,
            },
        ):
            claims[(row.subscription_id, row.aggregate_key)].deliveries.append(row)
        subscriptions = {
            r.id: Subscription(r.id, r.url, self._secrets(r, now))
            for r in await session.execute(
                text(_SUBSCRIPTIONS), {"ids": list({k[0] for k in keys})}
            )
        }

        async def send_and_record() -> None:
            # The chassis has committed the lease; no transaction is open while sending.
            results = await asyncio.gather(
                *(
                    self._send_queue(c, subscriptions.get(c.subscription_id))
                    for c in claims.values()
                )
            )
            async with unit_of_work(self.db) as recording:
                await self._record(recording, list(claims.values()), results)

        return AfterCommit(len(claims), send_and_record)

    @staticmethod
    def _secrets(row: Any, now: datetime) -> list[str]:
        out = [row.secret]
        expires = row.previous_secret_expires_at
        if row.previous_secret and expires is not None and expires > now:
            out.append(row.previous_secret)
        return out

    async def _send_queue(
        self, claim: Claim, sub: Subscription | None
    ) -> tuple[list[Attempt], datetime | None, str | None]:
        """Send a queue's deliveries in order: (attempts, when to look at the queue again
        (None: when its work is done), why to disable the subscription)."""
        attempts: list[Attempt] = []
        budget = self.settings.webhooks_lease_seconds / 2
        started = time.monotonic()
        for row in claim.deliveries:
            now = datetime.now(UTC)
            if sub is None:
                return attempts, now, None
            if time.monotonic() - started > budget:
                return attempts, now, None  # the rest next round, within the lease
            if row.data is None:  # pruned from the log before it could be delivered
                attempts.append(Attempt(row.id, "failed", now, error="event no longer in the log"))
                continue
            attempt = await self._send(sub, row)
            attempts.append(attempt)
            if attempt.status == "delivered":
                continue
            number = row.attempts + 1
            if number > len(self.schedule):
                attempt.status = "failed"
                reason = (
                    f"delivery {row.id} of event {row.event_id} failed {number} times "
                    f"over the retry schedule (last: {attempt.error or attempt.code})"
                )
                return attempts, attempt.at, reason
            attempt.next_at = attempt.at + timedelta(seconds=self.backoff(number))
            return attempts, attempt.next_at, None
        return attempts, None, None

    async def _send(self, sub: Subscription, row: Any) -> Attempt:
        at = datetime.now(UTC)
        body = cloudevent(row)
        msg_id = str(row.event_id)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/cloudevents+json; charset=utf-8",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signing.signature_header(sub.secrets, msg_id, timestamp, body),
        }
        started = time.perf_counter()
        async with self._limit:
            try:
                target = await ssrf.check(sub.url, self.allow_private)
                extensions: dict[str, Any] = {}
                if target.pinned:
                    headers["Host"] = target.host_header
                    extensions["sni_hostname"] = target.sni_hostname
                request = self.client.build_request(
                    "POST", target.url, content=body, headers=headers, extensions=extensions
                )
                # httpx's timeouts are per phase (a server dripping bytes never trips the read
                # timeout): bound the whole exchange as well.
                async with asyncio.timeout(self._deadline):
                    response = await self.client.send(request, stream=True)
                    try:
                        excerpt = b""
                        async for chunk in response.aiter_bytes():
                            excerpt += chunk
                            if len(excerpt) >= EXCERPT_BYTES:
                                break
                    finally:
                        await response.aclose()
            except ssrf.UnsafeTarget as e:
                return Attempt(row.id, "pending", at, error=f"refused: {e}"[:500])
            except Exception as e:  # httpx errors, TLS, the deadline: a failed attempt
                if not isinstance(e, httpx.HTTPError | TimeoutError):
                    log.warning("webhook delivery %s failed unexpectedly", row.id, exc_info=True)
                latency = int((time.perf_counter() - started) * 1000)
                error = f"{type(e).__name__}: {e}"[:500]
                return Attempt(row.id, "pending", at, latency_ms=latency, error=error)
        latency = int((time.perf_counter() - started) * 1000)
        text_excerpt = excerpt[:EXCERPT_BYTES].decode("utf-8", errors="replace")
        ok = 200 <= response.status_code < 300
        return Attempt(
            row.id,
            "delivered" if ok else "pending",
            at,
            code=response.status_code,
            latency_ms=latency,
            excerpt=text_excerpt,
            error=None if ok else f"HTTP {response.status_code}",
        )

    async def _record(
        self,
        session: AsyncSession,
        claims: list[Claim],
        results: list[tuple[list[Attempt], datetime | None, str | None]],
    ) -> None:
        now = datetime.now(UTC)
        attempts = [a for r in results for a in r[0]]
        if attempts:
            await session.execute(
                text(_RECORD),
                {
                    "ids": [a.delivery_id for a in attempts],
                    "statuses": [a.status for a in attempts],
                    "ats": [a.at for a in attempts],
                    "next_ats": [a.next_at for a in attempts],
                    "codes": [a.code for a in attempts],
                    "latencies": [a.latency_ms for a in attempts],
                    "excerpts": [a.excerpt for a in attempts],
                    "errors": [a.error for a in attempts],
                },
            )
        done = [c for c, r in zip(claims, results, strict=True) if r[1] is None]
        if done:
            await session.execute(
                text(_DROP_EMPTY),
                {
                    "subs": [c.subscription_id for c in done],
                    "keys": [c.aggregate_key for c in done],
                    "leases": [c.lease for c in done],
                    "bumps": [c.bumps for c in done],
                },
            )
        await session.execute(
            text(_RESCHEDULE),
            {
                "subs": [c.subscription_id for c in claims],
                "keys": [c.aggregate_key for c in claims],
                "leases": [c.lease for c in claims],
                "next_ats": [r[1] or now for r in results],
            },
        )
        for claim, (_, _, reason) in zip(claims, results, strict=True):
            if reason is None:
                continue
            row = (
                await session.execute(
                    text(_DISABLE), {"id": claim.subscription_id, "now": now, "reason": reason}
                )
            ).first()
            if row is not None:
                log.warning(
                    "webhook subscription %s of tenant %s (%s) disabled: %s",
                    claim.subscription_id,
                    row.tenant_id,
                    row.url,
                    reason,
                )
                outbox.add(
                    session,
                    disabled_event(
                        str(claim.subscription_id), row.tenant_id, row.url, row.version, reason, now
                    ),
                )
