"""Tasks: to-dos of a user, visible by assignee; each write bumps the version and adds one
event, and wakes the timer scheduler once committed (a new or moved fire time may be due)."""

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
from pipeline.engagement.schemas import TaskIn, TaskStatus

Row = dict[str, Any]
NOT_NULL = ("title", "assignee_id", "status", "priority")


class TaskNotFound(NotFound):
    def __init__(self, task_id: uuid.UUID) -> None:
        super().__init__(f"task {task_id} not found")


class AssigneeOutOfScope(Forbidden):
    def __init__(self, assignee_id: str) -> None:
        super().__init__(f"you may not assign tasks to {assignee_id}")


@dataclass
class TaskFilter:
    assignee_id: str | None = None
    status: TaskStatus | None = None
    due_before: datetime | None = None
    deal_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None


def check_times(due_at: datetime | None, remind_at: datetime | None) -> None:
    if due_at is not None and remind_at is not None and remind_at > due_at:
        raise invalid("remind_at", "must not be after due_at")


class TaskService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller
        self.events = EventSink(session, caller.actor)

    async def create(self, body: TaskIn) -> Row:
        if body.title is None:
            raise invalid("title", "Field required")
        check_times(body.due_at, body.remind_at)
        assignee = body.assignee_id or self.caller.sub
        await self.caller.require_deal(self.session, body.deal_id)
        if not self.caller.scope.sees(assignee):
            raise AssigneeOutOfScope(assignee)
        now = utcnow()
        status = body.status or "open"
        row = await repo.insert(
            self.session,
            "tasks",
            {
                "tenant_id": self.caller.tenant,
                "id": uuid.uuid4(),
                "title": body.title,
                "due_at": body.due_at,
                "remind_at": body.remind_at,
                "assignee_id": assignee,
                "contact_id": body.contact_id,
                "deal_id": body.deal_id,
                "status": status,
                "priority": body.priority or "normal",
                "completed_at": now if status == "done" else None,
                "created_by": self.caller.sub,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            },
        )
        self.events.task_created(row)
        self.caller.wake_scheduler_after_commit(self.session)
        return row

    async def get(self, task_id: uuid.UUID, *, for_update: bool = False) -> Row:
        row = await repo.get(
            self.session, "tasks", self.caller.tenant, task_id, for_update=for_update
        )
        if row is None or not self.caller.scope.sees(row["assignee_id"]):
            raise TaskNotFound(task_id)
        return row

    async def update(self, task_id: uuid.UUID, body: TaskIn, if_match: str | None) -> Row:
        # The row lock orders this write with the scheduler, which also bumps the version.
        row = await self.get(task_id, for_update=True)
        check_if_match(if_match, row["version"])
        changes = body.model_dump(exclude_unset=True)
        for name in NOT_NULL:
            if name in changes and changes[name] is None:
                raise invalid(name, "may not be null")
        check_times(
            changes.get("due_at", row["due_at"]), changes.get("remind_at", row["remind_at"])
        )
        if changes.get("deal_id") is not None and changes["deal_id"] != row["deal_id"]:
            await self.caller.require_deal(self.session, changes["deal_id"])
        assignee = changes.get("assignee_id")
        if (
            assignee is not None
            and assignee != row["assignee_id"]
            and not self.caller.scope.sees(assignee)
        ):
            raise AssigneeOutOfScope(assignee)
        now = utcnow()
        if "status" in changes and changes["status"] != row["status"]:
            changes["completed_at"] = now if changes["status"] == "done" else None
        changed = [c for c in repo.TASK_COLUMNS if c in changes and changes[c] != row[c]]
        if not changed:
            return row
        values = {c: changes[c] for c in changed} | {
            "updated_at": now,
            "version": row["version"] + 1,
        }
        updated = await repo.update(self.session, "tasks", self.caller.tenant, row["id"], values)
        self.events.task_updated(updated, [c for c in changed if c != "completed_at"])
        self.caller.wake_scheduler_after_commit(self.session)
        return updated

    async def delete(self, task_id: uuid.UUID, if_match: str | None) -> None:
        row = await self.get(task_id, for_update=True)
        check_if_match(if_match, row["version"])
        await repo.delete(self.session, "tasks", self.caller.tenant, row["id"])
        self.events.task_deleted(row, row["version"] + 1, utcnow())

    async def page(
        self, f: TaskFilter, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        q = repo.Query.for_tenant(self.caller.tenant)
        q.owners("assignee_id", self.caller.scope.owners)
        q.eq("assignee_id", f.assignee_id)
        q.eq("status", f.status)
        q.eq("deal_id", f.deal_id)
        q.eq("contact_id", f.contact_id)
        if f.due_before is not None:
            q.where("due_at < :due_before", due_before=f.due_before)
        after = read_cursor(cursor, "due", "id")
        key = None
        if after is not None:
            due = None if after["due"] is None else cursor_time(after["due"])
            key = (due, cursor_id(after["id"]))
        rows = await repo.list_tasks(self.session, q, key, limit)
        next_cursor = page_cursor(
            rows,
            limit,
            lambda r: {
                "due": r["due_at"].isoformat() if r["due_at"] else None,
                "id": str(r["id"]),
            },
        )
        return rows, next_cursor
