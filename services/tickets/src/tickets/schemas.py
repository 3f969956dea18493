"""API schemas (request and response bodies)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Channel = Literal["email", "web", "chat", "phone", "social", "api"]
Priority = Literal["low", "normal", "high", "urgent"]
TicketType = Literal["question", "incident", "problem", "task"]
Status = Literal["new", "open", "pending", "on_hold", "solved", "closed"]
Strategy = Literal["round_robin", "least_open"]
ArticleStatus = Literal["draft", "published"]

Tag = Field(min_length=1, max_length=100)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- tickets ---------------------------------------------------------------------------------


class TicketIn(Strict):
    subject: str = Field(min_length=1, max_length=500, examples=["Cannot log in"])
    description: str = Field(default="", max_length=100_000)
    requester_contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    channel: Channel = "api"
    priority: Priority = "normal"
    type: TicketType = "question"
    status: Literal["new", "open", "pending", "on_hold"] = "new"
    group_id: uuid.UUID | None = None
    assignee_id: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=100)
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    external_ids: dict[str, str] = Field(default_factory=dict)


class TicketPatch(Strict):
    """Every field optional; only the fields sent change."""

    subject: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=100_000)
    requester_contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    channel: Channel | None = None
    priority: Priority | None = None
    type: TicketType | None = None
    status: Status | None = None
    group_id: uuid.UUID | None = None
    assignee_id: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] | None = Field(default=None, max_length=100)
    custom_fields: dict[str, Any] | None = None
    external_ids: dict[str, str] | None = None


class SlaClockOut(BaseModel):
    due_at: datetime | None
    fulfilled_at: datetime | None
    breached: bool


class SlaOut(BaseModel):
    policy_id: uuid.UUID
    first_response: SlaClockOut | None
    next_response: SlaClockOut | None
    resolution: SlaClockOut | None


class CsatOut(BaseModel):
    status: Literal["requested", "answered", "expired"]
    survey_url: str | None
    score: int | None
    comment: str | None


class TicketPublic(BaseModel):
    id: uuid.UUID
    subject: str
    description: str
    requester_contact_id: uuid.UUID | None
    company_id: uuid.UUID | None
    channel: Channel
    priority: Priority
    type: TicketType
    status: Status
    group_id: uuid.UUID | None
    assignee_id: str | None
    tags: list[str]
    custom_fields: dict[str, Any]
    external_ids: dict[str, str]
    created_at: datetime
    updated_at: datetime
    solved_at: datetime | None
    closed_at: datetime | None
    version: int
    sla: SlaOut | None = None
    csat: CsatOut | None = None


class CommentIn(Strict):
    body: str = Field(min_length=1, max_length=100_000, examples=["Looking into it"])
    public: bool = True
    # "agent": written by the caller; "requester": the ticket's requester (e.g. an email reply
    # fed in by an integration). A requester comment is always public.
    author: Literal["agent", "requester"] = "agent"


class CommentPublic(BaseModel):
    id: uuid.UUID
    ticket_id: uuid.UUID
    body: str
    public: bool
    author_type: Literal["agent", "requester"]
    author_id: str | None
    created_at: datetime


# --- groups ----------------------------------------------------------------------------------


class GroupIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    strategy: Strategy = "round_robin"
    agents: list[str] = Field(default_factory=list, max_length=1000)


class GroupPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    strategy: Strategy | None = None
    agents: list[str] | None = Field(default=None, max_length=1000)


class GroupPublic(BaseModel):
    id: uuid.UUID
    name: str
    strategy: Strategy
    agents: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


# --- business hours and SLA policies ---------------------------------------------------------


class BusinessHoursIn(Strict):
    name: str = Field(min_length=1, max_length=200, examples=["New York office"])
    timezone: str = Field(examples=["America/New_York"])
    weekly: dict[str, list[list[str]]] = Field(
        examples=[{"mon": [["09:00", "12:00"], ["13:00", "17:00"]], "tue": [["09:00", "17:00"]]}]
    )
    holidays: list[date] = Field(default_factory=list, max_length=2000)
    # Seed holidays from the `holidays` library: ISO country (and optional subdivision) for
    # the given years, added to `holidays`.
    holiday_country: str | None = Field(default=None, examples=["US"])
    holiday_subdivision: str | None = Field(default=None, examples=["NY"])
    holiday_years: list[int] = Field(default_factory=list, max_length=10)


class BusinessHoursPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = None
    weekly: dict[str, list[list[str]]] | None = None
    holidays: list[date] | None = Field(default=None, max_length=2000)


class BusinessHoursPublic(BaseModel):
    id: uuid.UUID
    name: str
    timezone: str
    weekly: dict[str, list[list[str]]]
    holidays: list[date]
    created_at: datetime
    updated_at: datetime
    version: int


class Conditions(Strict):
    priority: list[Priority] | None = None
    channel: list[Channel] | None = None
    type: list[TicketType] | None = None
    tags: list[str] | None = None
    company_id: list[uuid.UUID] | None = None


class Targets(Strict):
    first_response: int | None = Field(default=None, ge=1, le=525_600)
    next_response: int | None = Field(default=None, ge=1, le=525_600)
    resolution: int | None = Field(default=None, ge=1, le=5_256_000)


class SlaPolicyIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    position: int = Field(ge=0, le=1_000_000)
    business_hours_id: uuid.UUID | None = None
    conditions: Conditions = Field(default_factory=Conditions)
    targets: dict[Priority, Targets]
    warning_minutes: int | None = Field(default=None, ge=0, le=10_000)


class SlaPolicyPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    position: int | None = Field(default=None, ge=0, le=1_000_000)
    business_hours_id: uuid.UUID | None = None
    conditions: Conditions | None = None
    targets: dict[Priority, Targets] | None = None
    warning_minutes: int | None = Field(default=None, ge=0, le=10_000)


class SlaPolicyPublic(BaseModel):
    id: uuid.UUID
    name: str
    position: int
    business_hours_id: uuid.UUID | None
    conditions: dict[str, Any]
    targets: dict[str, dict[str, int | None]]
    warning_minutes: int | None
    created_at: datetime
    updated_at: datetime
    version: int


# --- knowledge base --------------------------------------------------------------------------


class ArticleIn(Strict):
    title: str = Field(min_length=1, max_length=500)
    body: str = Field(default="", max_length=500_000)
    tags: list[str] = Field(default_factory=list, max_length=100)
    locale: str = Field(default="en", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    status: ArticleStatus = "draft"


class ArticlePatch(Strict):
    title: str | None = Field(default=None, min_length=1, max_length=500)
    body: str | None = Field(default=None, max_length=500_000)
    tags: list[str] | None = Field(default=None, max_length=100)
    locale: str | None = Field(default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    status: ArticleStatus | None = None


class ArticlePublic(BaseModel):
    id: uuid.UUID
    title: str
    body: str
    tags: list[str]
    locale: str
    status: ArticleStatus
    created_at: datetime
    updated_at: datetime
    version: int


class SearchHit(BaseModel):
    id: uuid.UUID
    title: str
    locale: str
    tags: list[str]
    rank: float
    snippet: str


class SearchResult(BaseModel):
    items: list[SearchHit]
    next_cursor: str | None = None


# --- surveys ---------------------------------------------------------------------------------


class CsatAnswer(Strict):
    score: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=5000)


class NpsAnswer(Strict):
    score: int = Field(ge=0, le=10)
    comment: str | None = Field(default=None, max_length=5000)


class NpsSurveyIn(Strict):
    name: str = Field(min_length=1, max_length=200, examples=["Q4 NPS"])
    contact_ids: list[uuid.UUID] = Field(min_length=1, max_length=10_000)


class NpsInvitationOut(BaseModel):
    contact_id: uuid.UUID
    survey_url: str


class NpsSurveyOut(BaseModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    invitations: list[NpsInvitationOut]


class AnswerAccepted(BaseModel):
    status: Literal["answered"] = "answered"
