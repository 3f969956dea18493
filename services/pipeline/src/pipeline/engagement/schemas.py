"""API schemas of activities, tasks, playbooks and the activities report.

`*In` models are what clients send; every field is optional so one model serves POST and
PATCH (PATCH applies only the fields sent; `null` clears a clearable field). `*Public` is what
they get back. Timestamps must carry a UTC offset (a naive time is a 422)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

ActivityType = Literal["call", "meeting", "visit", "email", "note"]
TaskStatus = Literal["open", "done", "cancelled"]
Priority = Literal["low", "normal", "high", "urgent"]
GroupBy = Literal["day", "week"]

UserId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Subject = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Outcome = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]

_STRICT = ConfigDict(extra="forbid")


# --- activities ----------------------------------------------------------------------------


class ActivityIn(BaseModel):
    """An activity write. `owner_id` defaults to the caller, `occurred_at` to now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "type": "call",
                    "subject": "Discovery call",
                    "body": "Talked budget and timing.",
                    "contact_id": "5f0c8f4e-1d2a-4d53-9a53-0a4f3f8f2f10",
                    "duration_seconds": 900,
                    "outcome": "connected",
                }
            ]
        },
    )

    type: ActivityType | None = None
    subject: Subject | None = None
    body: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    contact_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    owner_id: UserId | None = None
    occurred_at: AwareDatetime | None = None
    duration_seconds: Annotated[int, Field(ge=0, le=30 * 86_400)] | None = None
    outcome: Outcome | None = Field(default=None, examples=["connected", "left_voicemail"])


class ActivityPublic(BaseModel):
    id: uuid.UUID
    type: ActivityType
    subject: str | None
    body: str | None
    contact_id: uuid.UUID | None
    deal_id: uuid.UUID | None
    owner_id: str
    occurred_at: datetime
    duration_seconds: int | None
    outcome: str | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    version: int


# --- tasks ---------------------------------------------------------------------------------


class TaskIn(BaseModel):
    """A task write. `assignee_id` defaults to the caller, `status` to open, `priority` to
    normal. `remind_at` may not be after `due_at`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Call back",
                    "due_at": "2026-12-01T15:00:00Z",
                    "remind_at": "2026-12-01T14:45:00Z",
                    "assignee_id": "u-rep1",
                    "priority": "high",
                }
            ]
        },
    )

    title: Title | None = None
    due_at: AwareDatetime | None = None
    remind_at: AwareDatetime | None = None
    assignee_id: UserId | None = None
    contact_id: uuid.UUID | None = None
    deal_id: uuid.UUID | None = None
    status: TaskStatus | None = None
    priority: Priority | None = None


class TaskPublic(BaseModel):
    id: uuid.UUID
    title: str
    due_at: datetime | None
    remind_at: datetime | None
    assignee_id: str
    contact_id: uuid.UUID | None
    deal_id: uuid.UUID | None
    status: TaskStatus
    priority: Priority
    completed_at: datetime | None
    reminder_fired_for: datetime | None = Field(
        description="the remind_at the reminder fired for (null: not fired yet)"
    )
    overdue_fired_for: datetime | None = Field(
        description="the due_at the overdue event fired for (null: not fired yet)"
    )
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    version: int


# --- playbooks -----------------------------------------------------------------------------


class PlaybookIn(BaseModel):
    """Enablement content for the stages it lists. `attachments` are http(s) URLs."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Negotiation checklist",
                    "body": "## Before the call\n- confirm the budget owner",
                    "stage_ids": ["0b7f1c2e-6a43-4f9e-9d55-2f1f7f1a0c11"],
                    "tags": ["negotiation"],
                    "attachments": ["https://example.com/pricing.pdf"],
                }
            ]
        },
    )

    title: Title | None = None
    body: Annotated[str, StringConstraints(max_length=200_000)] | None = None
    stage_ids: list[uuid.UUID] | None = Field(default=None, max_length=200)
    tags: list[Tag] | None = Field(default=None, max_length=50)
    attachments: list[HttpUrl] | None = Field(default=None, max_length=50)


class PlaybookPublic(BaseModel):
    id: uuid.UUID
    title: str
    body: str
    stage_ids: list[uuid.UUID]
    tags: list[str]
    attachments: list[str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    version: int


class DealPlaybookOut(BaseModel):
    deal_id: uuid.UUID
    stage_id: uuid.UUID
    items: list[PlaybookPublic]
    next_cursor: str | None = None


# --- activities report ---------------------------------------------------------------------


class ActivityFigures(BaseModel):
    count: int
    total_duration_seconds: int = Field(description="sum of the recorded durations")
    average_duration_seconds: float | None = Field(
        description="mean of the recorded durations (activities without one are left out); "
        "null when none was recorded"
    )


class ActivityBucket(ActivityFigures):
    start: date = Field(description="first day of the day or ISO week (UTC)")


class ActivityReportRow(ActivityFigures):
    owner_id: str
    type: ActivityType
    buckets: list[ActivityBucket]


class ActivityReport(BaseModel):
    from_: date = Field(alias="from", serialization_alias="from")
    to: date
    group_by: GroupBy
    items: list[ActivityReportRow]
    next_cursor: str | None = None

    model_config = ConfigDict(populate_by_name=True)
