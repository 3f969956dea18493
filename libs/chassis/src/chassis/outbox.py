"""Transactional outbox: `add` collects events in the unit of work; the chassis writes them
in the same transaction as the state change, right before the one commit.

The relay is woken after the commit, not by a NOTIFY inside the transaction: PostgreSQL
serializes the commits of notifying transactions on a global lock, which defeats group
commit and capped writes at one fsync each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import insert
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import tables, telemetry
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


async def flush_events(session: AsyncSession) -> None:
    """Insert the collected events (one statement) and wake the relay on commit."""
    events: list[tuple[OutgoingEvent, str | None]] = session.sync_session.info.pop(_KEY, [])
    if not events:
        return
    rows: list[dict[str, Any]] = [
        {
            "event_id": e.id,
            "tenant_id": e.tenant,
            "subject": e.subject,
            "ce_type": e.ce_type,
            "aggregate_id": e.aggregate_id,
            "aggregate_version": e.version,
            "headers": e.headers(tp),
            "payload": e.message.SerializeToString(),
            "created_at": e.time,
        }
        for e, tp in events
    ]
    await session.execute(insert(tables.outbox), rows)
    session.sync_session.info[_WROTE] = True


def discard(session: AsyncSession) -> None:
    """Forget the collected events (the transaction that raised them rolled back)."""
    session.sync_session.info.pop(_KEY, None)
    session.sync_session.info.pop(_WROTE, None)
