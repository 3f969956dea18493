"""The durable task timers: `task.reminder_due` at remind_at and `task.overdue` at due_at,
for open tasks, exactly once per fire time.

The fire time a timer fired for is stored on the task (`reminder_fired_for`,
`overdue_fired_for`) in the same transaction as its outbox event, and a timer is pending while
that differs from the current fire time. So a commit never fires twice (the mark is there), a
crash before the commit fires after restart (nothing was marked), `FOR UPDATE SKIP LOCKED`
keeps replicas from claiming the same task, and moving remind_at or due_at re-arms the timer.
Each fired timer bumps the task's version: consumers order a task's events by version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.db import Database
from chassis.scheduler import Scheduler
from pipeline.engagement import repository as repo
from pipeline.engagement.events import Actor, EventSink

ACTOR = Actor("system:task-scheduler", "crm/pipeline:scheduler")
# When the earliest pending timer is already due, it is held by another transaction (a
# replica firing it, a PATCH of the task): look again shortly instead of spinning.
RECHECK = timedelta(milliseconds=50)


async def fire(session: AsyncSession, now: datetime, limit: int) -> int:
    reminders, overdue = await repo.claim_due_timers(session, now, limit)
    due_reminder, due_overdue = set(reminders), set(overdue)
    keys = list(dict.fromkeys([*reminders, *overdue]))
    marks = [(t, i, (t, i) in due_reminder, (t, i) in due_overdue) for t, i in keys]
    sink = EventSink(session, ACTOR)
    fired = 0
    for row in await repo.mark_fired(session, marks):
        version = row["version"] - int(row["fired_reminder"]) - int(row["fired_overdue"])
        # The reminder comes first: remind_at is never after due_at.
        if row["fired_reminder"]:
            version += 1
            sink.task_reminder_due(row, version, now)
            fired += 1
        if row["fired_overdue"]:
            version += 1
            sink.task_overdue(row, version, now)
            fired += 1
    return max(fired, len(reminders), len(overdue))


async def next_due(session: AsyncSession) -> datetime | None:
    due = await repo.next_timer(session)
    if due is None:
        return None
    return max(due, datetime.now(UTC) + RECHECK)


def task_scheduler(db: Database, poll_seconds: float) -> Scheduler:
    return Scheduler("pipeline-task-timers", db, fire, next_due=next_due, poll_seconds=poll_seconds)


async def start_scheduler(app: FastAPI) -> None:
    scheduler = task_scheduler(app.state.db, app.state.settings.scheduler_poll_seconds)
    app.state.task_scheduler = scheduler
    await scheduler.start()


async def stop_scheduler(app: FastAPI) -> None:
    scheduler: Scheduler | None = getattr(app.state, "task_scheduler", None)
    if scheduler is not None:
        await scheduler.stop()
        app.state.task_scheduler = None
