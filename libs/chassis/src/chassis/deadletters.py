"""The dead-letter admin API every service with consumers serves (mounted by `create_app`):
list, inspect, replay and discard the events its consumers gave up on.

- Paths: `/admin/dead-letters` on the service itself, outside `/v1` because the gateway routes
  `/v1/<resource>` prefixes to services; the gateway exposes them as
  `/v1/admin/{service}/dead-letters...` (gateway/admin.py).
- Access: role `admin` only (403 otherwise). Dead letters belong to the service, but each one
  carries its event's tenant (`ce-tenant`, or the tenant segment of the subject for a message
  too malformed to have it), and an admin sees only its own tenant's; another tenant's dead
  letter is a 404, as everywhere.
- Replay re-runs the stored event through the same consumer's delivery path in one
  transaction: inbox dedup, version order, the handlers, and the dead letter's deletion
  commit together, so an effect happens at most once however often (or however
  concurrently) a replay is asked for. Republishing to NATS was rejected: the event would go
  to every durable consumer of the producer's stream (other services', the gateway's event
  log and webhooks), from a service that does not own that stream, and the admin would get
  no answer about whether it worked.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from google.protobuf import descriptor_pool, json_format, message_factory
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.auth import Principal, principal_dependency
from chassis.db import Database, SessionDep, commit, get_database
from chassis.events import IncomingEvent, MalformedEvent
from chassis.http import Page, decode_cursor, encode_cursor
from chassis.problems import Conflict, Forbidden, NotFound, Unprocessable, invalid

if TYPE_CHECKING:
    from chassis.consumer import ConsumerRunner

log = logging.getLogger("chassis.deadletters")

PREFIX = "/admin/dead-letters"

DEAD_LETTERS = Gauge(
    "crm_dead_letters",
    "Dead letters stored, waiting to be replayed or discarded",
    ["service", "consumer"],
)
DEAD_LETTER_ACTIONS = Counter(
    "crm_dead_letter_actions_total",
    "Dead-letter replays and discards through the admin API",
    ["service", "consumer", "action"],
)

# The tenant a dead letter belongs to: its CloudEvents tenant, else the subject's tenant
# segment (`crm.<context>.<tenant>.<aggregate>.<event>`) for a message without CE headers.
_TENANT = "COALESCE(headers->>'ce-tenant', split_part(subject, '.', 3))"
_SUMMARY = (
    "id, consumer, event_id, subject, headers->>'ce-type' AS type, "
    "headers->>'ce-subject' AS aggregate_id, headers->>'ce-sequence' AS version, "
    f"{_TENANT} AS tenant, error, deliveries, created_at"
)


class DeadLetter(BaseModel):
    id: int
    consumer: str
    event_id: str
    subject: str
    type: str | None
    tenant: str
    aggregate_id: str | None
    version: int | None
    error: str
    deliveries: int
    created_at: datetime


class DeadLetterDetail(DeadLetter):
    headers: dict[str, str]
    payload_encoding: Literal["json", "base64"]
    payload: Any


class ReplayResult(BaseModel):
    id: int
    event_id: str
    outcome: Literal["applied", "skipped"]
    detail: str


class DeadLetterNotFound(NotFound):
    def __init__(self, dead_letter_id: int) -> None:
        super().__init__(f"dead letter {dead_letter_id} not found")


class ReplayOutOfOrder(Conflict):
    title = "Replay out of order"


class ReplayFailed(Conflict):
    title = "Replay failed"


# --- metrics ---------------------------------------------------------------------------

_gauge_labels: dict[str, set[str]] = {}


def _consumer_label(service: str, durable: str) -> str:
    """The consumer's name as in `crm_events_consumed_total` (the durable is `<service>-<name>`)."""
    return durable.removeprefix(f"{service}-")


async def refresh_gauge(db: Database, service: str, known: Iterable[str] = ()) -> None:
    """Set `crm_dead_letters` from the table (the truth across replicas): called at startup
    and after every change. `known` consumers get a 0 series, so an alert on `> 0` works from
    the first scrape. Never raises: metrics must not break the caller."""
    try:
        async with db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT consumer, count(*) FROM dead_letters GROUP BY consumer")
                )
            ).all()
    except Exception as e:
        log.warning("could not count dead letters: %r", e)
        return
    counts = {_consumer_label(service, str(r[0])): int(r[1]) for r in rows}
    labels = _gauge_labels.setdefault(service, set())
    labels.update(known, counts)
    for name in labels:
        DEAD_LETTERS.labels(service, name).set(counts.get(name, 0))


# --- queries ---------------------------------------------------------------------------


def _summary(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    version = data.get("version")
    data["version"] = int(version) if version and str(version).isdigit() else None
    return data


def decode_payload(dataschema: str, payload: bytes) -> tuple[Literal["json", "base64"], Any]:
    """The payload as its protobuf JSON mapping when the message type is known to this process
    (every type a service imports, e.g. all of `crm.registry`, is in protobuf's default pool),
    else base64."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(dataschema)
        message = message_factory.GetMessageClass(descriptor)()
        message.ParseFromString(payload)
        return "json", json_format.MessageToDict(message, preserving_proto_field_name=True)
    except Exception:
        return "base64", base64.b64encode(payload).decode()


async def _find(session: AsyncSession, tenant: str, dead_letter_id: int, *, lock: bool) -> Any:
    row = (
        await session.execute(
            text(
                f"SELECT {_SUMMARY}, headers, payload FROM dead_letters "
                f"WHERE id = :id AND {_TENANT} = :t" + (" FOR UPDATE" if lock else "")
            ),
            {"id": dead_letter_id, "t": tenant},
        )
    ).first()
    if row is None:
        raise DeadLetterNotFound(dead_letter_id)
    return row


async def _earlier(session: AsyncSession, row: Any, version: int) -> list[int]:
    """Dead letters of the same consumer and aggregate with a lower version: what blocks an
    out-of-order replay."""
    rows = await session.execute(
        text(
            "SELECT id FROM dead_letters WHERE consumer = :c AND headers->>'ce-subject' = :agg "
            "AND CASE WHEN headers->>'ce-sequence' ~ '^[0-9]{1,18}$' "
            "THEN CAST(headers->>'ce-sequence' AS bigint) END < :v ORDER BY id"
        ),
        {"c": row.consumer, "agg": row.aggregate_id, "v": version},
    )
    return [int(r[0]) for r in rows]


# --- replay ----------------------------------------------------------------------------


def _runner(request: Request, durable: str) -> ConsumerRunner:
    for runner in getattr(request.app.state, "consumers", []):
        if runner.durable == durable:
            return runner  # type: ignore[no-any-return]
    raise Conflict(f"consumer {durable} does not run in this service; discard the dead letter")


class _HandlerFailed(Exception):
    def __init__(self, durable: str, error: str) -> None:
        super().__init__(error)
        self.durable = durable
        self.error = error


async def replay(
    request: Request, db: Database, service: str, tenant: str, dead_letter_id: int
) -> ReplayResult:
    """Apply the stored event through its consumer and delete the dead letter, in one
    transaction. The row lock serializes replays of one dead letter (the second finds it
    gone: 404); the advisory lock serializes replays of one event stored twice (the second
    finds it in the inbox: skipped)."""
    try:
        async with db.sessionmaker() as session:
            try:
                durable, result = await _replay_in(session, request, tenant, dead_letter_id)
                await commit(session)
            except BaseException:
                outbox.discard(session)
                await session.rollback()
                raise
    except _HandlerFailed as e:
        await _record_failure(db, service, e.durable, dead_letter_id, e.error)
        raise ReplayFailed(f"the handler failed again: {e.error}", error=e.error) from e
    DEAD_LETTER_ACTIONS.labels(service, _consumer_label(service, durable), result.outcome).inc()
    log.info(
        "dead letter %s (event %s) replayed: %s", dead_letter_id, result.event_id, result.outcome
    )
    await refresh_gauge(db, service)
    return result


async def _replay_in(
    session: AsyncSession, request: Request, tenant: str, dead_letter_id: int
) -> tuple[str, ReplayResult]:
    row = await _find(session, tenant, dead_letter_id, lock=True)
    runner = _runner(request, row.consumer)
    try:
        ev = IncomingEvent.from_nats(row.subject, dict(row.headers), row.payload)
    except MalformedEvent as e:
        raise Unprocessable(f"a malformed message cannot be replayed ({e}); discard it") from e
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:c), hashtext(:e))"),
        {"c": row.consumer, "e": ev.id},
    )
    try:
        outcome, detail = await runner.replay(session, ev)
    except Exception as e:
        raise _HandlerFailed(row.consumer, repr(e)) from e
    if outcome == "gap":
        raise ReplayOutOfOrder(
            f"{detail}; replay the earlier events of this aggregate first",
            earlier_dead_letters=await _earlier(session, row, ev.version),
        )
    await session.execute(text("DELETE FROM dead_letters WHERE id = :id"), {"id": dead_letter_id})
    return row.consumer, ReplayResult(
        id=dead_letter_id, event_id=ev.id, outcome=outcome, detail=detail
    )


async def _record_failure(
    db: Database, service: str, durable: str, dead_letter_id: int, error: str
) -> None:
    """Keep the latest error on the dead letter; `deliveries` counts replay attempts too."""
    async with db.sessionmaker() as session:
        await session.execute(
            text("UPDATE dead_letters SET error = :e, deliveries = deliveries + 1 WHERE id = :id"),
            {"e": error[:2000], "id": dead_letter_id},
        )
        await commit(session)
    DEAD_LETTER_ACTIONS.labels(service, _consumer_label(service, durable), "failed").inc()


# --- the router ------------------------------------------------------------------------

Authenticate = Callable[[Request], Awaitable[Principal]]
DatabaseDep = Annotated[Database, Depends(get_database)]
# A bigserial: a larger number would overflow the query parameter (a 500), not miss (a 404).
DeadLetterId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class _AdminOnly:
    """The dependency that lets admins through (403 otherwise), after `authenticate`."""

    def __init__(self, authenticate: Authenticate) -> None:
        self.authenticate = authenticate

    async def __call__(self, request: Request) -> Principal:
        principal = await self.authenticate(request)
        if not principal.is_admin:
            raise Forbidden("dead letters are managed by admins")
        return principal


def router(
    service: str, *, prefix: str = PREFIX, authenticate: Authenticate = principal_dependency
) -> APIRouter:
    """The admin router of one service. `authenticate` resolves the caller (the gateway passes
    its own, which also charges the rate limit)."""
    admin = Depends(_AdminOnly(authenticate))
    api = APIRouter(prefix=prefix, tags=["dead letters"])

    @api.get("", response_model=Page[DeadLetter])
    async def list_dead_letters(
        session: SessionDep,
        principal: Principal = admin,
        consumer: Annotated[
            str | None, Query(description="durable name", pattern=r"^[A-Za-z0-9_.-]{1,200}$")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Oldest first (the order to replay them in)."""
        after = (decode_cursor(cursor) or {}).get("id", 0)
        if not isinstance(after, int) or not 0 <= after < 2**63:
            raise invalid("cursor", "not a cursor returned by this API")
        params: dict[str, Any] = {"t": principal.tenant, "after": after, "n": limit + 1}
        where = f"{_TENANT} = :t AND id > :after"
        if consumer is not None:
            where += " AND consumer = :c"
            params["c"] = consumer
        rows = (
            await session.execute(
                text(f"SELECT {_SUMMARY} FROM dead_letters WHERE {where} ORDER BY id LIMIT :n"),
                params,
            )
        ).all()
        items = [_summary(r) for r in rows[:limit]]
        more = len(rows) > limit
        return {
            "items": items,
            "next_cursor": encode_cursor({"id": items[-1]["id"]}) if more else None,
        }

    @api.get("/{dead_letter_id}", response_model=DeadLetterDetail)
    async def get_dead_letter(
        dead_letter_id: DeadLetterId,
        session: SessionDep,
        principal: Principal = admin,
    ) -> dict[str, Any]:
        row = await _find(session, principal.tenant, dead_letter_id, lock=False)
        headers = {str(k): str(v) for k, v in dict(row.headers).items()}
        encoding, payload = decode_payload(headers.get("ce-dataschema", ""), row.payload)
        return {
            **_summary(row),
            "headers": headers,
            "payload_encoding": encoding,
            "payload": payload,
        }

    @api.post("/{dead_letter_id}/replay", response_model=ReplayResult)
    async def replay_dead_letter(
        dead_letter_id: DeadLetterId,
        request: Request,
        db: DatabaseDep,
        principal: Principal = admin,
    ) -> ReplayResult:
        """Re-run the event through its consumer (after the handler was fixed). `applied`: its
        effect is committed; `skipped`: it had been applied already (inbox) or is older than
        the applied version. Either way the dead letter is gone. 409 when an earlier version
        of the aggregate is missing (`earlier_dead_letters`) or the handler fails again (the
        dead letter stays, with the new error)."""
        return await replay(request, db, service, principal.tenant, dead_letter_id)

    @api.delete("/{dead_letter_id}", status_code=204)
    async def discard_dead_letter(
        dead_letter_id: DeadLetterId,
        session: SessionDep,
        db: DatabaseDep,
        principal: Principal = admin,
    ) -> Response:
        row = await _find(session, principal.tenant, dead_letter_id, lock=True)
        await session.execute(
            text("DELETE FROM dead_letters WHERE id = :id"), {"id": dead_letter_id}
        )
        await commit(session)
        log.info("dead letter %s (event %s) discarded by %s", row.id, row.event_id, principal.sub)
        DEAD_LETTER_ACTIONS.labels(
            service, _consumer_label(service, row.consumer), "discarded"
        ).inc()
        await refresh_gauge(db, service)
        return Response(status_code=204)

    return api
