"""Transactional outbox: `add` collects events in the unit of work; the chassis writes them
in the same transaction as the state change, right before the one commit.

The relay is woken after the commit, not by a NOTIFY inside the transaction: PostgreSQL
serializes the commits of notifying transactions on a global lock, which defeats group
commit and capped writes at one fsync each."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import telemetry
from chassis.driver import raw_connection
from chassis.events import OutgoingEvent

NOTIFY_CHANNEL = "crm_outbox"
_KEY = "chassis.outbox"
_WROTE = "chassis.outbox.wrote"
_after_commit: list[Callable[[], None]] = []


def on_commit(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` after every commit that wrote outbox rows (the relay's wake-up);
    returns a function that unregisters it."""
    _after_commit.append(callback)
    return lambda: _after_commit.remove(callback)


def committed(session: AsyncSession) -> None:
    if session.sync_session.info.pop(_WROTE, False):
        for callback in list(_after_commit):
            callback()


def add(session: AsyncSession, event: OutgoingEvent) -> None:
    """Record `event` to be published once the caller's transaction commits."""
    pending: list[tuple[OutgoingEvent, str | None]] = session.sync_session.info.setdefault(_KEY, [])
    pending.append((event, telemetry.current_traceparent()))


def pending(session: AsyncSession) -> list[OutgoingEvent]:
    return [e for e, _ in session.sync_session.info.get(_KEY, [])]


_COLUMNS = (
    "event_id",
    "tenant_id",
    "subject",
    "ce_type",
    "aggregate_id",
    "aggregate_version",
    "headers",
    "payload",
    "created_at",
)
_INSERT = (
    f"INSERT INTO outbox ({', '.join(_COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)"
)
# From this many events a unit of work writes them with COPY: its set-up costs more than a
# prepared executemany for a few rows, and far less per row for many (same cut as contacts).
COPY_FROM = 20


async def flush_events(session: AsyncSession) -> None:
    """Insert the collected events and mark the unit of work for the relay's wake-up.

    The rows go straight to the asyncpg connection under the session (same transaction):
    a prepared executemany (COPY from `COPY_FROM` rows), without the ORM's per-statement
    compile and bookkeeping, on the path every write takes."""
    events: list[tuple[OutgoingEvent, str | None]] = session.sync_session.info.pop(_KEY, [])
    if not events:
        return
    rows = [
        (
            e.id,
            e.tenant,
            e.subject,
            e.ce_type,
            e.aggregate_id,
            e.version,
            json.dumps(e.headers(tp), separators=(",", ":")),
            e.message.SerializeToString(),
            e.time,
        )
        for e, tp in events
    ]
    driver = await raw_connection(session)
    if len(rows) < COPY_FROM:
        await driver.executemany(_INSERT, rows)
    else:  # a bulk write (batch, import): COPY keeps the order (ids ascend) at far less cost
        await driver.copy_records_to_table("outbox", records=rows, columns=_COLUMNS)
    session.sync_session.info[_WROTE] = True


def discard(session: AsyncSession) -> None:
    """Forget the collected events (the transaction that raised them rolled back)."""
    session.sync_session.info.pop(_KEY, None)
    session.sync_session.info.pop(_WROTE, None)
