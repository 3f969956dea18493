"""Activities: logged calls, meetings, visits, emails and notes. Visible by owner (the sales
org scope); each write bumps the version and adds one event."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match
from chassis.problems import Forbidden, NotFound, invalid
from pipeline.engagement import repository as repo
from pipeline.engagement.caller import (
    Caller,
    cursor_id,
    cursor_time,
    page_cursor,
    read_cursor,
    utcnow,
)
from pipeline.engagement.events import EventSink
from pipeline.engagement.schemas import ActivityIn, ActivityType

Row = dict[str, Any]
NOT_NULL = ("type", "owner_id", "occurred_at")


class ActivityNotFound(NotFound):
    def __init__(self, activity_id: uuid.UUID) -> None:
        super().__init__(f"activity {activity_id} not found")


class OwnerOutOfScope(Forbidden):
    def __init__(self, owner_id: str) -> None:
        super().__init__(f"you may not log activities for {owner_id}")


@dataclass
class ActivityFilter:
    owner_id: str | None = None
    type: ActivityType | None = None
    contact_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


class ActivityService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.events = EventSink(session, caller.actor)

    async def create(self, body: ActivityIn) -> Row:
        if body.type is None:
            raise invalid("type", "Field required")
        owner = body.owner_id or self.caller.sub
        await self.caller.require_deal(self.session, body.deal_id)
        if not self.caller.scope.sees(owner):
            raise OwnerOutOfScope(owner)
        now = utcnow()
        row = await repo.insert(
            self.session,
            "activities",
            {
                "tenant_id": self.caller.tenant,
                "id": uuid.uuid4(),
                "type": body.type,
                "subject": body.subject,
                "body": body.body,
                "contact_id": body.contact_id,
                "deal_id": body.deal_id,
                "owner_id": owner,
                "occurred_at": body.occurred_at or now,
                "duration_seconds": body.duration_seconds,
                "outcome": body.outcome,
                "created_by": self.caller.sub,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            },
        )
        self.events.activity_logged(row)
        return row

    async def get(self, activity_id: uuid.UUID, *, for_update: bool = False) -> Row:
        row = await repo.get(
            self.session, "activities", self.caller.tenant, activity_id, for_update=for_update
        )
        if row is None or not self.caller.scope.sees(row["owner_id"]):
            raise ActivityNotFound(activity_id)
        return row

    async def update(self, activity_id: uuid.UUID, body: ActivityIn, if_match: str | None) -> Row:
        row = await self.get(activity_id, for_update=True)
        check_if_match(if_match, row["version"])
        changes = body.model_dump(exclude_unset=True)
        for name in NOT_NULL:
            if name in changes and changes[name] is None:
                raise invalid(name, "may not be null")
        if changes.get("deal_id") is not None and changes["deal_id"] != row["deal_id"]:
            await self.caller.require_deal(self.session, changes["deal_id"])
        owner = changes.get("owner_id")
        if owner is not None and owner != row["owner_id"] and not self.caller.scope.sees(owner):
            raise OwnerOutOfScope(owner)
        changed = [c for c in repo.ACTIVITY_COLUMNS if c in changes and changes[c] != row[c]]
        if not changed:
            return row
        values = {c: changes[c] for c in changed}
        values |= {"updated_at": utcnow(), "version": row["version"] + 1}
        updated = await repo.update(
            self.session, "activities", self.caller.tenant, row["id"], values
        )
        self.events.activity_updated(updated, changed)
        return updated

    async def delete(self, activity_id: uuid.UUID, if_match: str | None) -> None:
        row = await self.get(activity_id, for_update=True)
        check_if_match(if_match, row["version"])
        await repo.delete(self.session, "activities", self.caller.tenant, row["id"])
        self.events.activity_deleted(row, row["version"] + 1, utcnow())

    async def page(
        self, f: ActivityFilter, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        if f.occurred_from and f.occurred_to and f.occurred_from > f.occurred_to:
            raise invalid("occurred_to", "must not be before occurred_from")
        q = repo.Query.for_tenant(self.caller.tenant)
        q.owners("owner_id", self.caller.scope.owners)
        q.eq("owner_id", f.owner_id)
        q.eq("type", f.type)
        q.eq("contact_id", f.contact_id)
        q.eq("deal_id", f.deal_id)
        if f.occurred_from is not None:
            q.where("occurred_at >= :occurred_from", occurred_from=f.occurred_from)
        if f.occurred_to is not None:
            q.where("occurred_at < :occurred_to", occurred_to=f.occurred_to)
        after = read_cursor(cursor, "at", "id")
        key = (cursor_time(after["at"]), cursor_id(after["id"])) if after else None
        rows = await repo.list_activities(self.session, q, key, limit)
        next_cursor = page_cursor(
            rows, limit, lambda r: {"at": r["occurred_at"].isoformat(), "id": str(r["id"])}
        )
        return rows, next_cursor
