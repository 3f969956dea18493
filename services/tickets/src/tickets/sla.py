"""SLA: policy matching, the clocks of a ticket, and the durable scheduler's fire function.

Clocks (one row each in `sla_clocks`):
- first_response: from creation to the first public agent comment;
- next_response: from a requester comment (the first one not yet answered) to the next
  public agent comment; a new clock per such cycle;
- resolution: from creation to solved; paused while the ticket is pending or on_hold
  (business time already consumed is kept in `consumed`; while paused `due_at` is NULL);
  reopening a solved ticket resumes it with what was consumed before.

Due times are `add_business(calendar, running_since, target - consumed)`. A clock met after
its due time is breached. The scheduler sends `sla.warning` (warning_minutes before due,
skipped when the breach is also due) and `sla.breached` exactly once per clock: the fire time
is `next_fire_at`, claimed with FOR UPDATE SKIP LOCKED and cleared in the same transaction as
the outbox row. A ticket write locks its clocks FOR UPDATE first, so a reply racing the
scheduler either sees the breach committed or prevents it (the breach is then sent by the
reply's own transaction, since the reply came late).

Aggregate of the SLA events: "sla", id = the clock id, with the clock's own version
(warning = n+1, breached = n+1...): never the ticket's version, so the scheduler does not
invalidate ETags that agents hold.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from crm.tickets.v1 import tickets_pb2 as pb
from tickets import events
from tickets.businesstime import Calendar, CalendarError, add_business, business_elapsed

Row = dict[str, Any]
METRICS = ("first_response", "next_response", "resolution")
PAUSED = ("pending", "on_hold")
SYSTEM_ACTOR = "system:sla"

_calendars: dict[tuple[str, str, int], Calendar] = {}


def matches(policy: Mapping[str, Any], ticket: Mapping[str, Any]) -> bool:
    """Every condition given must hold (tags: the ticket has any of them)."""
    cond = policy["conditions"] or {}
    for key in ("priority", "channel", "type"):
        if cond.get(key) and ticket[key] not in cond[key]:
            return False
    if cond.get("tags") and not set(cond["tags"]) & set(ticket["tags"] or []):
        return False
    companies = {str(c) for c in cond.get("company_id") or []}
    return not companies or str(ticket["company_id"] or "") in companies


async def match_policy(session: AsyncSession, tenant: str, ticket: Mapping[str, Any]) -> Row | None:
    """The first policy by position whose conditions match and that has targets for the
    ticket's priority."""
    rows = await session.execute(
        text(
            "SELECT id, business_hours_id, conditions, targets, warning_minutes FROM sla_policies "
            "WHERE tenant_id = :t AND deleted_at IS NULL ORDER BY position, created_at, id"
        ),
        {"t": tenant},
    )
    for r in rows.mappings():
        if matches(dict(r), ticket) and ticket["priority"] in (r["targets"] or {}):
            return dict(r)
    return None


async def calendar_for(session: AsyncSession, tenant: str, bh_id: Any) -> Calendar | None:
    """The calendar of a business-hours id (None = 24x7); cached per version. A deleted
    calendar still serves the clocks that were started in it."""
    if bh_id is None:
        return None
    row = (
        await session.execute(
            text(
                "SELECT version, timezone, weekly, holidays FROM business_hours "
                "WHERE tenant_id = :t AND id = :id"
            ),
            {"t": tenant, "id": bh_id},
        )
    ).first()
    if row is None:
        return None
    key = (tenant, str(bh_id), row.version)
    cal = _calendars.get(key)
    if cal is None:
        if len(_calendars) > 10_000:
            _calendars.clear()
        cal = Calendar.build(row.timezone, row.weekly, row.holidays)
        _calendars[key] = cal
    return cal


def next_fire_at(c: Mapping[str, Any]) -> datetime | None:
    if c["fulfilled_at"] is not None or c["stopped_at"] is not None or c["due_at"] is None:
        return None
    if c["breached_at"] is not None:
        return None
    if c["warned_at"] is None and c["warn_at"] is not None and c["warn_at"] < c["due_at"]:
        return c["warn_at"]  # type: ignore[no-any-return]
    return c["due_at"]  # type: ignore[no-any-return]


def is_breached(c: Mapping[str, Any]) -> bool:
    return c["breached_at"] is not None or (
        c["fulfilled_at"] is not None
        and c["due_at"] is not None
        and c["fulfilled_at"] > c["due_at"]
    )


def present(c: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"due_at": c["due_at"], "fulfilled_at": c["fulfilled_at"], "breached": is_breached(c)}


def latest(clocks: Sequence[Mapping[str, Any]], metric: str) -> Mapping[str, Any] | None:
    found = [c for c in clocks if c["metric"] == metric]
    return max(found, key=lambda c: c["started_at"]) if found else None


def current_clocks(clocks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The latest clock of each metric (what the ticket shows)."""
    return [c for m in METRICS if (c := latest(clocks, m)) is not None]


_CLOCK_COLS = (
    "id, ticket_id, metric, policy_id, business_hours_id, priority, target_minutes, "
    "warning_minutes, started_at, running_since, consumed, due_at, warn_at, fulfilled_at, "
    "warned_at, breached_at, stopped_at, business_elapsed, next_fire_at, version"
)


async def load_clocks(
    session: AsyncSession, tenant: str, ticket_ids: Sequence[Any], lock: bool = False
) -> list[Row]:
    if not ticket_ids:
        return []
    rows = await session.execute(
        text(
            f"SELECT {_CLOCK_COLS} FROM sla_clocks WHERE tenant_id = :t "
            "AND ticket_id = ANY(CAST(:ids AS uuid[])) ORDER BY started_at, id"
            + (" FOR UPDATE" if lock else "")
        ),
        {"t": tenant, "ids": [str(i) for i in ticket_ids]},
    )
    return [dict(r) for r in rows.mappings()]


class TicketClocks:
    """The clocks of one ticket during one write (the ticket row is locked by the caller)."""

    def __init__(
        self,
        session: AsyncSession,
        tenant: str,
        ticket: Row,
        clocks: list[Row],
        default_warning: int,
        origin: str = "",
    ) -> None:
        self.session = session
        self.tenant = tenant
        self.ticket = ticket
        self.clocks = clocks
        self.default_warning = default_warning
        self.origin = origin
        self._dirty: list[Row] = []
        self._new: list[Row] = []

    @classmethod
    async def load(
        cls, session: AsyncSession, tenant: str, ticket: Row, default_warning: int, origin: str = ""
    ) -> TicketClocks:
        clocks = await load_clocks(session, tenant, [ticket["id"]], lock=True)
        return cls(session, tenant, ticket, clocks, default_warning, origin)

    def active(self, metric: str) -> Row | None:
        for c in reversed(self.clocks):
            if c["metric"] == metric and c["fulfilled_at"] is None and c["stopped_at"] is None:
                return c
        return None

    async def _schedule(self, c: Row) -> None:
        if c["running_since"] is None:
            c["due_at"] = c["warn_at"] = None
        else:
            cal = await calendar_for(self.session, self.tenant, c["business_hours_id"])
            left = timedelta(minutes=c["target_minutes"]) - c["consumed"]
            if left <= timedelta(0):
                c["due_at"] = c["running_since"]
            else:
                try:
                    c["due_at"] = add_business(cal, c["running_since"], left.total_seconds() / 60)
                except CalendarError:
                    # Not reachable within businesstime.MAX_DAYS (a calendar with almost no
                    # open time): the clock runs without a due time rather than failing the write.
                    c["due_at"] = None
            c["warn_at"] = (
                c["due_at"] - timedelta(minutes=c["warning_minutes"]) if c["due_at"] else None
            )
        c["next_fire_at"] = next_fire_at(c)
        if c not in self._dirty and c not in self._new:
            self._dirty.append(c)

    async def start(self, policy: Mapping[str, Any], metric: str, at: datetime) -> Row | None:
        target = (policy["targets"].get(self.ticket["priority"]) or {}).get(metric)
        if not target:
            return None
        running = not (metric == "resolution" and self.ticket["status"] in PAUSED)
        c: Row = {
            "id": uuid.uuid4(),
            "ticket_id": self.ticket["id"],
            "metric": metric,
            "policy_id": policy["id"],
            "business_hours_id": policy["business_hours_id"],
            "priority": self.ticket["priority"],
            "target_minutes": int(target),
            "warning_minutes": policy["warning_minutes"]
            if policy["warning_minutes"] is not None
            else self.default_warning,
            "started_at": at,
            "running_since": at if running else None,
            "consumed": timedelta(0),
            "due_at": None,
            "warn_at": None,
            "fulfilled_at": None,
            "warned_at": None,
            "breached_at": None,
            "stopped_at": None,
            "business_elapsed": None,
            "next_fire_at": None,
            "version": 0,
        }
        self._new.append(c)
        self.clocks.append(c)
        await self._schedule(c)
        return c

    async def _consume(self, c: Row, at: datetime) -> None:
        if c["running_since"] is not None:
            cal = await calendar_for(self.session, self.tenant, c["business_hours_id"])
            c["consumed"] = c["consumed"] + business_elapsed(cal, c["running_since"], at)
            c["running_since"] = None

    async def fulfill(self, metric: str, at: datetime) -> None:
        c = self.active(metric)
        if c is None:
            return
        late = c["due_at"] is not None and at > c["due_at"]
        await self._consume(c, at)
        c["fulfilled_at"] = at
        c["business_elapsed"] = c["consumed"]
        if late and c["breached_at"] is None:
            # The scheduler did not get to it (or was down): this write sends the breach.
            c["breached_at"] = at
            self._emit_sla(c, pb.SlaBreached, at)
        c["next_fire_at"] = None
        if c not in self._dirty and c not in self._new:
            self._dirty.append(c)

    async def pause(self, at: datetime) -> None:
        c = self.active("resolution")
        if c is None or c["running_since"] is None:
            return
        await self._consume(c, at)
        await self._schedule(c)

    async def resume(self, at: datetime) -> None:
        c = self.active("resolution")
        if c is None or c["running_since"] is not None:
            return
        c["running_since"] = at
        await self._schedule(c)

    async def reopen_resolution(self, at: datetime) -> None:
        """A solved ticket reopened: its resolution clock runs again with what it consumed."""
        c = None
        for x in reversed(self.clocks):
            if x["metric"] == "resolution":
                c = x
                break
        if c is None or c["fulfilled_at"] is None or c["stopped_at"] is not None:
            return
        c["fulfilled_at"] = None
        c["business_elapsed"] = None
        c["running_since"] = at
        await self._schedule(c)

    async def stop(self, at: datetime, metrics: Sequence[str] = METRICS) -> None:
        for m in metrics:
            c = self.active(m)
            if c is not None:
                await self._consume(c, at)
                c["stopped_at"] = at
                c["next_fire_at"] = None
                if c not in self._dirty and c not in self._new:
                    self._dirty.append(c)

    async def retarget(self, policy: Mapping[str, Any] | None, at: datetime) -> None:
        """The ticket's priority or matching policy changed: running clocks take the new
        targets (a metric the new policy has no target for stops); consumed time is kept."""
        for m in METRICS:
            c = self.active(m)
            if c is None:
                continue
            target = None
            if policy is not None:
                target = (policy["targets"].get(self.ticket["priority"]) or {}).get(m)
            if not target:
                await self.stop(at, [m])
                continue
            if (
                c["policy_id"] == policy["id"]  # type: ignore[index]
                and c["target_minutes"] == target
                and c["priority"] == self.ticket["priority"]
            ):
                continue
            if c["running_since"] is not None:
                await self._consume(c, at)
                c["running_since"] = at
            c["policy_id"] = policy["id"]  # type: ignore[index]
            c["business_hours_id"] = policy["business_hours_id"]  # type: ignore[index]
            c["priority"] = self.ticket["priority"]
            c["target_minutes"] = int(target)
            await self._schedule(c)

    def _emit_sla(
        self, c: Row, cls: type[pb.SlaWarning] | type[pb.SlaBreached], at: datetime
    ) -> None:
        c["version"] += 1
        emit_clock_event(self.session, self.tenant, c, self.ticket, cls, at, self.origin)

    async def save(self) -> None:
        params = [_params(self.tenant, c) for c in self._new]
        if params:
            await self.session.execute(
                text(
                    "INSERT INTO sla_clocks (tenant_id, id, ticket_id, metric, policy_id, "
                    "business_hours_id, priority, target_minutes, warning_minutes, started_at, "
                    "running_since, consumed, due_at, warn_at, fulfilled_at, warned_at, "
                    "breached_at, stopped_at, business_elapsed, next_fire_at, version) VALUES "
                    "(:tenant_id, :id, :ticket_id, :metric, :policy_id, :business_hours_id, "
                    ":priority, :target_minutes, :warning_minutes, :started_at, :running_since, "
                    ":consumed, :due_at, :warn_at, :fulfilled_at, :warned_at, :breached_at, "
                    ":stopped_at, :business_elapsed, :next_fire_at, :version)"
                ),
                params,
            )
        params = [_params(self.tenant, c) for c in self._dirty]
        if params:
            await self.session.execute(
                text(
                    "UPDATE sla_clocks SET policy_id = :policy_id, "
                    "business_hours_id = :business_hours_id, priority = :priority, "
                    "target_minutes = :target_minutes, warning_minutes = :warning_minutes, "
                    "running_since = :running_since, consumed = :consumed, due_at = :due_at, "
                    "warn_at = :warn_at, fulfilled_at = :fulfilled_at, warned_at = :warned_at, "
                    "breached_at = :breached_at, stopped_at = :stopped_at, "
                    "business_elapsed = :business_elapsed, next_fire_at = :next_fire_at, "
                    "version = :version WHERE tenant_id = :tenant_id AND id = :id"
                ),
                params,
            )
        self._new.clear()
        self._dirty.clear()


def _params(tenant: str, c: Row) -> dict[str, Any]:
    keys = [
        "id",
        "ticket_id",
        "metric",
        "policy_id",
        "business_hours_id",
        "priority",
        "target_minutes",
        "warning_minutes",
        "started_at",
        "running_since",
        "consumed",
        "due_at",
        "warn_at",
        "fulfilled_at",
        "warned_at",
        "breached_at",
        "stopped_at",
        "business_elapsed",
        "next_fire_at",
        "version",
    ]
    return {"tenant_id": tenant, **{k: c[k] for k in keys}}


def emit_clock_event(
    session: AsyncSession,
    tenant: str,
    clock: Mapping[str, Any],
    ticket: Mapping[str, Any],
    cls: type[pb.SlaWarning] | type[pb.SlaBreached],
    at: datetime,
    origin: str = "",
) -> None:
    ref = pb.SlaClockRef(
        ticket_id=str(clock["ticket_id"]),
        metric=clock["metric"],
        policy_id=str(clock["policy_id"]),
        due_at=events.ts(clock["due_at"]),
        priority=clock["priority"],
        group_id=events.s(ticket["group_id"]),
        assignee_id=events.s(ticket["assignee_id"]),
        requester_contact_id=events.s(ticket["requester_contact_id"]),
    )
    events.emit(
        session,
        cls(clock=ref),
        tenant=tenant,
        aggregate_id=clock["id"],
        version=clock["version"],
        actor=SYSTEM_ACTOR,
        origin=origin,
        occurred_at=at,
    )


# --- the scheduler's side --------------------------------------------------------------------

_CLAIM = text(
    "SELECT c.tenant_id, c.id, c.ticket_id, c.metric, c.policy_id, c.priority, c.due_at, "
    "c.warn_at, c.warned_at, c.breached_at, c.fulfilled_at, c.stopped_at, c.version, "
    "t.group_id, t.assignee_id, t.requester_contact_id "
    "FROM sla_clocks c JOIN tickets t ON t.tenant_id = c.tenant_id AND t.id = c.ticket_id "
    "WHERE c.next_fire_at <= :now ORDER BY c.next_fire_at LIMIT :limit "
    "FOR UPDATE OF c SKIP LOCKED"
)
_MARK = text(
    "UPDATE sla_clocks SET warned_at = :warned_at, breached_at = :breached_at, "
    "version = :version, next_fire_at = :next_fire_at WHERE tenant_id = :tenant_id AND id = :id"
)


async def fire_due(session: AsyncSession, now: datetime, limit: int) -> int:
    """Claim due clocks, mark them and add their events, in the caller's transaction."""
    rows = [
        dict(r) for r in (await session.execute(_CLAIM, {"now": now, "limit": limit})).mappings()
    ]
    updates = []
    for c in rows:
        if c["breached_at"] is None and c["due_at"] <= now:
            if c["warned_at"] is None:
                c["warned_at"] = now  # a warning after the fact is noise: skipped
            c["breached_at"] = now
            c["version"] += 1
            emit_clock_event(session, c["tenant_id"], c, c, pb.SlaBreached, now)
        elif c["warned_at"] is None and c["warn_at"] is not None and c["warn_at"] <= now:
            c["warned_at"] = now
            c["version"] += 1
            emit_clock_event(session, c["tenant_id"], c, c, pb.SlaWarning, now)
        c["next_fire_at"] = next_fire_at(c)
        updates.append(
            {
                k: c[k]
                for k in ("tenant_id", "id", "warned_at", "breached_at", "version", "next_fire_at")
            }
        )
    if updates:
        await session.execute(_MARK, updates)
    return len(rows)


async def next_due(session: AsyncSession) -> datetime | None:
    value = (
        await session.execute(
            text("SELECT min(next_fire_at) FROM sla_clocks WHERE next_fire_at IS NOT NULL")
        )
    ).scalar()
    return value if isinstance(value, datetime) else None


def utcnow() -> datetime:
    return datetime.now(UTC)
