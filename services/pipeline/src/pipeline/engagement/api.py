"""HTTP routers of activities, tasks, playbooks and the activities report: thin wrappers that
resolve the caller and call the services."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import AwareDatetime

from chassis.auth import require_roles
from chassis.db import SessionDep
from chassis.http import Page, set_etag
from pipeline.engagement.activities import ActivityFilter, ActivityService
from pipeline.engagement.caller import CallerDep
from pipeline.engagement.playbooks import PlaybookService
from pipeline.engagement.reports import activities_report
from pipeline.engagement.schemas import (
    ActivityIn,
    ActivityPublic,
    ActivityReport,
    ActivityType,
    DealPlaybookOut,
    GroupBy,
    PlaybookIn,
    PlaybookPublic,
    TaskIn,
    TaskPublic,
    TaskStatus,
)
from pipeline.engagement.tasks import TaskFilter, TaskService

Row = dict[str, Any]
IfMatch = Annotated[str | None, Header()]
Limit = Annotated[int, Query(ge=1, le=200)]


async def activity_service(session: SessionDep, caller: CallerDep) -> ActivityService:
    return ActivityService(session, caller)


async def task_service(session: SessionDep, caller: CallerDep) -> TaskService:
    return TaskService(session, caller)


async def playbook_service(session: SessionDep, caller: CallerDep) -> PlaybookService:
    return PlaybookService(session, caller)


Activities = Annotated[ActivityService, Depends(activity_service)]
Tasks = Annotated[TaskService, Depends(task_service)]
Playbooks = Annotated[PlaybookService, Depends(playbook_service)]
PLAYBOOK_WRITERS = [Depends(require_roles("sales_manager"))]


def activity_out(row: Row, response: Response | None = None) -> ActivityPublic:
    if response is not None:
        set_etag(response, row["version"])
    return ActivityPublic.model_validate(row)


def task_out(row: Row, response: Response | None = None) -> TaskPublic:
    if response is not None:
        set_etag(response, row["version"])
    return TaskPublic.model_validate(row)


def playbook_out(row: Row, response: Response | None = None) -> PlaybookPublic:
    if response is not None:
        set_etag(response, row["version"])
    return PlaybookPublic.model_validate(row)


# --- activities ------------------------------------------------------------------------------

activities_router = APIRouter(prefix="/v1/activities", tags=["activities"])


@activities_router.post("", status_code=201, response_model=ActivityPublic)
async def log_activity(body: ActivityIn, svc: Activities, response: Response) -> ActivityPublic:
    """Log an activity (owner defaults to the caller, occurred_at to now)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/activities/{row['id']}"
    return activity_out(row, response)


@activities_router.get("", response_model=Page[ActivityPublic])
async def list_activities(
    svc: Activities,
    owner_id: str | None = None,
    type: ActivityType | None = None,
    contact_id: uuid.UUID | None = None,
    deal_id: uuid.UUID | None = None,
    occurred_from: AwareDatetime | None = None,
    occurred_to: AwareDatetime | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[ActivityPublic]:
    """Activities the caller may see, newest first (occurred_to is exclusive)."""
    f = ActivityFilter(owner_id, type, contact_id, deal_id, occurred_from, occurred_to)
    rows, next_cursor = await svc.page(f, cursor, limit)
    return Page(items=[activity_out(r) for r in rows], next_cursor=next_cursor)


@activities_router.get("/{activity_id}", response_model=ActivityPublic)
async def get_activity(
    activity_id: uuid.UUID, svc: Activities, response: Response
) -> ActivityPublic:
    """One activity."""
    return activity_out(await svc.get(activity_id), response)


@activities_router.patch("/{activity_id}", response_model=ActivityPublic)
async def update_activity(
    activity_id: uuid.UUID,
    body: ActivityIn,
    svc: Activities,
    response: Response,
    if_match: IfMatch = None,
) -> ActivityPublic:
    """Change the fields sent (If-Match required)."""
    return activity_out(await svc.update(activity_id, body, if_match), response)


@activities_router.delete("/{activity_id}", status_code=204)
async def delete_activity(
    activity_id: uuid.UUID, svc: Activities, if_match: IfMatch = None
) -> Response:
    """Delete an activity (If-Match required)."""
    await svc.delete(activity_id, if_match)
    return Response(status_code=204)


# --- tasks -----------------------------------------------------------------------------------

tasks_router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@tasks_router.post("", status_code=201, response_model=TaskPublic)
async def create_task(body: TaskIn, svc: Tasks, response: Response) -> TaskPublic:
    """Create a task (assignee defaults to the caller)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/tasks/{row['id']}"
    return task_out(row, response)


@tasks_router.get("", response_model=Page[TaskPublic])
async def list_tasks(
    svc: Tasks,
    assignee_id: str | None = None,
    status: TaskStatus | None = None,
    due_before: AwareDatetime | None = None,
    deal_id: uuid.UUID | None = None,
    contact_id: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[TaskPublic]:
    """Tasks the caller may see, soonest due first (no due time last)."""
    f = TaskFilter(assignee_id, status, due_before, deal_id, contact_id)
    rows, next_cursor = await svc.page(f, cursor, limit)
    return Page(items=[task_out(r) for r in rows], next_cursor=next_cursor)


@tasks_router.get("/{task_id}", response_model=TaskPublic)
async def get_task(task_id: uuid.UUID, svc: Tasks, response: Response) -> TaskPublic:
    """One task."""
    return task_out(await svc.get(task_id), response)


@tasks_router.patch("/{task_id}", response_model=TaskPublic)
async def update_task(
    task_id: uuid.UUID, body: TaskIn, svc: Tasks, response: Response, if_match: IfMatch = None
) -> TaskPublic:
    """Change the fields sent (If-Match required); moving remind_at or due_at re-arms its timer."""
    return task_out(await svc.update(task_id, body, if_match), response)


@tasks_router.delete("/{task_id}", status_code=204)
async def delete_task(task_id: uuid.UUID, svc: Tasks, if_match: IfMatch = None) -> Response:
    """Delete a task (If-Match required)."""
    await svc.delete(task_id, if_match)
    return Response(status_code=204)


# --- playbooks -------------------------------------------------------------------------------

playbooks_router = APIRouter(prefix="/v1/playbooks", tags=["playbooks"])


@playbooks_router.post(
    "", status_code=201, response_model=PlaybookPublic, dependencies=PLAYBOOK_WRITERS
)
async def create_playbook(body: PlaybookIn, svc: Playbooks, response: Response) -> PlaybookPublic:
    """Create a playbook (admin or sales manager)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/playbooks/{row['id']}"
    return playbook_out(row, response)


@playbooks_router.get("", response_model=Page[PlaybookPublic])
async def list_playbooks(
    svc: Playbooks,
    stage_id: uuid.UUID | None = None,
    tag: str | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> Page[PlaybookPublic]:
    """Playbooks of the tenant, oldest first."""
    rows, next_cursor = await svc.page(stage_id, tag, cursor, limit)
    return Page(items=[playbook_out(r) for r in rows], next_cursor=next_cursor)


@playbooks_router.get("/{playbook_id}", response_model=PlaybookPublic)
async def get_playbook(
    playbook_id: uuid.UUID, svc: Playbooks, response: Response
) -> PlaybookPublic:
    """One playbook."""
    return playbook_out(await svc.get(playbook_id), response)


@playbooks_router.patch(
    "/{playbook_id}", response_model=PlaybookPublic, dependencies=PLAYBOOK_WRITERS
)
async def update_playbook(
    playbook_id: uuid.UUID,
    body: PlaybookIn,
    svc: Playbooks,
    response: Response,
    if_match: IfMatch = None,
) -> PlaybookPublic:
    """Change the fields sent (admin or sales manager; If-Match required)."""
    return playbook_out(await svc.update(playbook_id, body, if_match), response)


@playbooks_router.delete("/{playbook_id}", status_code=204, dependencies=PLAYBOOK_WRITERS)
async def delete_playbook(
    playbook_id: uuid.UUID, svc: Playbooks, if_match: IfMatch = None
) -> Response:
    """Delete a playbook (admin or sales manager; If-Match required)."""
    await svc.delete(playbook_id, if_match)
    return Response(status_code=204)


deal_playbook_router = APIRouter(prefix="/v1/deals", tags=["playbooks"])


@deal_playbook_router.get("/{deal_id}/playbook", response_model=DealPlaybookOut)
async def deal_playbook(deal_id: uuid.UUID, svc: Playbooks) -> DealPlaybookOut:
    """The playbooks for the deal's current stage."""
    deal, rows = await svc.for_deal(deal_id)
    return DealPlaybookOut(
        deal_id=deal["id"], stage_id=deal["stage_id"], items=[playbook_out(r) for r in rows]
    )


# --- report ----------------------------------------------------------------------------------

report_router = APIRouter(prefix="/v1/reports", tags=["reports"])


@report_router.get("/activities", response_model=ActivityReport, response_model_by_alias=True)
async def activity_report(
    session: SessionDep,
    caller: CallerDep,
    start: Annotated[date, Query(alias="from")],
    end: Annotated[date, Query(alias="to")],
    group_by: GroupBy = "day",
    owner_id: str | None = None,
    team_id: uuid.UUID | None = None,
) -> ActivityReport:
    """Per rep and activity type: count, total and average recorded duration, per day or
    week (from and to are inclusive UTC dates)."""
    return await activities_report(
        session, caller, start, end, group_by, owner_id, str(team_id) if team_id else None
    )


ROUTERS = (
    activities_router,
    tasks_router,
    playbooks_router,
    deal_playbook_router,
    report_router,
)
