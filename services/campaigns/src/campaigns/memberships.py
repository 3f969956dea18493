"""Which segments each contact is in, kept and published (`contact_segments.changed`) so the
360 view shows them without asking this service at read time.

- A contact's change re-evaluates that contact against every segment (one statement).
- A segment's creation, change or deletion (and a static segment's member changes) queues
  the segment; a scheduler refreshes queued segments set-based: its members now against the
  contacts whose stored memberships contain it, then one event per contact that moved.
- Time-based conditions (`within_last_days`, score decay) drift without any write: every
  `segment_refresh_seconds` the scheduler queues every dynamic segment again.

The stored row's version is the event's version (aggregate `contact_segments`, id = the
contact id), so consumers apply them in order.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import segments
from campaigns.common import Actor, emit, execute, now, one, rows
from chassis.db import Database
from chassis.scheduler import Scheduler
from crm.campaigns.v1 import campaigns_pb2 as pb


def _actor(tenant: str) -> Actor:
    return Actor(tenant, "system:segments", "crm/campaigns:segments")


async def _publish(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, segment_ids: list[uuid.UUID]
) -> bool:
    """Store the contact's memberships; publish them when they changed."""
    ids = sorted(set(segment_ids), key=str)
    if not ids:
        # Never a row (and so never a version) for a contact that was in no segment: the
        # first event of a contact is its version 1.
        saved = await one(
            session,
            "UPDATE contact_segment_memberships SET segment_ids = '{}', version = version + 1 "
            "WHERE tenant_id = :t AND contact_id = :c AND segment_ids <> '{}' RETURNING version",
            {"t": tenant, "c": contact_id},
        )
    else:
        saved = await one(
            session,
            "INSERT INTO contact_segment_memberships AS m (tenant_id, contact_id, segment_ids, "
            "version) VALUES (:t, :c, CAST(:ids AS uuid[]), 1) "
            "ON CONFLICT (tenant_id, contact_id) DO UPDATE SET "
            "segment_ids = EXCLUDED.segment_ids, version = m.version + 1 "
            "WHERE NOT (m.segment_ids @> EXCLUDED.segment_ids "
            "AND m.segment_ids <@ EXCLUDED.segment_ids) "
            "RETURNING version",
            {"t": tenant, "c": contact_id, "ids": ids},
        )
    if saved is None:
        return False
    await _emit(session, tenant, contact_id, ids, int(saved["version"]))
    return True


async def _emit(
    session: AsyncSession,
    tenant: str,
    contact_id: uuid.UUID,
    ids: list[uuid.UUID],
    version: int,
    names: dict[uuid.UUID, tuple[str, str]] | None = None,
) -> None:
    if names is None:
        names = await _names(session, tenant, ids)
    refs = [pb.SegmentRef(id=str(i), name=names[i][0], type=names[i][1]) for i in ids if i in names]
    emit(
        session,
        _actor(tenant),
        pb.ContactSegmentsChanged(contact_id=str(contact_id), segments=refs),
        contact_id,
        version,
    )


async def _names(
    session: AsyncSession, tenant: str, ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, str]]:
    if not ids:
        return {}
    found = await rows(
        session,
        "SELECT id, name, type FROM segments WHERE tenant_id = :t AND id = ANY(:ids)",
        {"t": tenant, "ids": list(ids)},
    )
    return {r["id"]: (r["name"], r["type"]) for r in found}


async def refresh_contact(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> None:
    """After a contact changed: its memberships now, published when they moved."""
    found = await segments.segments_of(session, tenant, contact_id)
    await _publish(session, tenant, contact_id, [s["id"] for s in found])


async def contact_gone(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> None:
    """Deleted, erased or merged away: in no segment any more."""
    await _publish(session, tenant, contact_id, [])


async def request_refresh(session: AsyncSession, tenant: str, segment_id: uuid.UUID) -> None:
    """Queue a segment whose definition or static members changed."""
    await execute(
        session,
        "INSERT INTO segment_refresh_queue (tenant_id, segment_id, requested_at) "
        "VALUES (:t, :s, :now) ON CONFLICT (tenant_id, segment_id) DO UPDATE "
        "SET requested_at = EXCLUDED.requested_at",
        {"t": tenant, "s": segment_id, "now": now()},
    )


async def refresh_segment(session: AsyncSession, tenant: str, segment_id: uuid.UUID) -> int:
    """Set-based: who is in the segment now against who was; returns the contacts moved."""
    segment = await one(
        session,
        "SELECT * FROM segments WHERE tenant_id = :t AND id = :s AND deleted_at IS NULL",
        {"t": tenant, "s": segment_id},
    )
    now_in: set[uuid.UUID] = set()
    if segment is not None:
        cond = await segments.condition(session, segment)
        now_in = {
            r["id"]
            for r in await rows(
                session,
                f"SELECT c.id FROM contacts c WHERE c.tenant_id = :tenant AND {cond.sql}",
                {**cond.params, "tenant": tenant},
            )
        }
    was_in = {
        r["contact_id"]
        for r in await rows(
            session,
            "SELECT contact_id FROM contact_segment_memberships "
            "WHERE tenant_id = :t AND segment_ids @> ARRAY[CAST(:s AS uuid)]",
            {"t": tenant, "s": segment_id},
        )
    }
    gained, lost = sorted(now_in - was_in, key=str), sorted(was_in - now_in, key=str)
    if not gained and not lost:
        return 0
    changed = []
    if gained:
        changed += await rows(
            session,
            "INSERT INTO contact_segment_memberships AS m (tenant_id, contact_id, segment_ids, "
            "version) SELECT :t, c, ARRAY[CAST(:s AS uuid)], 1 FROM unnest(CAST(:ids AS uuid[])) c "
            "ON CONFLICT (tenant_id, contact_id) DO UPDATE SET "
            "segment_ids = array_append(m.segment_ids, CAST(:s AS uuid)), version = m.version + 1 "
            # a concurrent contact refresh may have added it already
            "WHERE NOT m.segment_ids @> ARRAY[CAST(:s AS uuid)] "
            "RETURNING contact_id, segment_ids, version",
            {"t": tenant, "s": segment_id, "ids": gained},
        )
    if lost:
        changed += await rows(
            session,
            "UPDATE contact_segment_memberships SET "
            "segment_ids = array_remove(segment_ids, CAST(:s AS uuid)), version = version + 1 "
            "WHERE tenant_id = :t AND contact_id = ANY(CAST(:ids AS uuid[])) "
            "AND segment_ids @> ARRAY[CAST(:s AS uuid)] "
            "RETURNING contact_id, segment_ids, version",
            {"t": tenant, "s": segment_id, "ids": lost},
        )
    names = await _names(session, tenant, sorted({i for r in changed for i in r["segment_ids"]}))
    for r in changed:
        ids = sorted(r["segment_ids"], key=str)
        await _emit(session, tenant, r["contact_id"], ids, int(r["version"]), names)
    return len(changed)


class Refresher:
    """The scheduler body: queued segments first; a full pass of dynamic segments every
    `full_pass_seconds` (time-based conditions)."""

    def __init__(self, full_pass_seconds: float) -> None:
        self.full_pass_seconds = full_pass_seconds
        self._last_full = time.monotonic()

    async def fire(self, session: AsyncSession, at: datetime, limit: int) -> int:
        if time.monotonic() - self._last_full >= self.full_pass_seconds:
            self._last_full = time.monotonic()
            await execute(
                session,
                "INSERT INTO segment_refresh_queue (tenant_id, segment_id, requested_at) "
                "SELECT tenant_id, id, :now FROM segments "
                "WHERE type = 'dynamic' AND deleted_at IS NULL ON CONFLICT DO NOTHING",
                {"now": at},
            )
        claimed = await rows(
            session,
            "DELETE FROM segment_refresh_queue WHERE (tenant_id, segment_id) IN ("
            "SELECT tenant_id, segment_id FROM segment_refresh_queue ORDER BY requested_at "
            "LIMIT :n FOR UPDATE SKIP LOCKED) RETURNING tenant_id, segment_id",
            {"n": min(limit, 5)},
        )
        for r in claimed:
            await refresh_segment(session, r["tenant_id"], r["segment_id"])
        return len(claimed)


async def next_due(session: AsyncSession) -> datetime | None:
    row = await one(session, "SELECT min(requested_at) AS at FROM segment_refresh_queue", {})
    return row["at"] if row else None


def scheduler(db: Database, poll: float, full_pass_seconds: float) -> Scheduler:
    return Scheduler(
        "segment-memberships",
        db,
        Refresher(full_pass_seconds).fire,
        next_due=next_due,
        poll_seconds=poll,
        batch_size=5,
    )
