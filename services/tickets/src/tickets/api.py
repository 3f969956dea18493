"""HTTP routers: thin wrappers that resolve the caller and call the domain modules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from chassis.auth import PrincipalDep
from chassis.db import SessionDep
from chassis.http import Page, set_etag
from chassis.problems import Forbidden
from tickets import config, kb, reports, surveys
from tickets.access import Caller
from tickets.schemas import (
    AnswerAccepted,
    ArticleIn,
    ArticlePatch,
    ArticlePublic,
    BusinessHoursIn,
    BusinessHoursPatch,
    BusinessHoursPublic,
    CommentIn,
    CommentPublic,
    CsatAnswer,
    GroupIn,
    GroupPatch,
    GroupPublic,
    NpsAnswer,
    NpsSurveyIn,
    NpsSurveyOut,
    Priority,
    SearchResult,
    SlaPolicyIn,
    SlaPolicyPatch,
    SlaPolicyPublic,
    Status,
    TicketIn,
    TicketPatch,
    TicketPublic,
)
from tickets.settings import TicketsSettings
from tickets.ticketing import TicketService

Row = dict[str, Any]


async def get_caller(
    principal: PrincipalDep, x_origin: Annotated[str | None, Header()] = None
) -> Caller:
    return Caller(principal, (x_origin or principal.client or "")[:200])


async def get_settings(request: Request) -> TicketsSettings:
    settings: TicketsSettings = request.app.state.settings
    return settings


CallerDep = Annotated[Caller, Depends(get_caller)]
SettingsDep = Annotated[TicketsSettings, Depends(get_settings)]
IfMatch = Annotated[str | None, Header()]


async def ticket_service(
    session: SessionDep, caller: CallerDep, settings: SettingsDep
) -> TicketService:
    return TicketService(session, caller, settings)


Tickets = Annotated[TicketService, Depends(ticket_service)]


def _out(model: Any, row: Row, response: Response | None = None) -> Any:
    if response is not None:
        set_etag(response, row["version"])
    return model.model_validate(row)


def _reader(caller: Caller) -> None:
    if not caller.is_agent:
        raise Forbidden("requires the agent, support_agent or admin role")


# --- tickets ---------------------------------------------------------------------------------

tickets_router = APIRouter(prefix="/v1/tickets", tags=["tickets"])


@tickets_router.post("", status_code=201, response_model=TicketPublic)
async def create_ticket(body: TicketIn, svc: Tickets, response: Response) -> TicketPublic:
    """Create a ticket (routed to an agent of its group unless assigned; SLA clocks start)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/tickets/{row['id']}"
    out: TicketPublic = _out(TicketPublic, row, response)
    return out


@tickets_router.put(
    "/by-external-id/{system}/{external_id}",
    response_model=TicketPublic,
    responses={201: {"model": TicketPublic, "description": "Created"}},
)
async def upsert_ticket(
    system: Annotated[str, Path(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")],
    external_id: Annotated[str, Path(min_length=1, max_length=200)],
    body: TicketIn,
    svc: Tickets,
    response: Response,
) -> TicketPublic:
    """Create or update the ticket with this external id (201 created, 200 updated)."""
    row, created = await svc.upsert_by_external_id(system, external_id, body)
    response.status_code = 201 if created else 200
    out: TicketPublic = _out(TicketPublic, row, response)
    return out


@tickets_router.get("", response_model=Page[TicketPublic])
async def list_tickets(
    svc: Tickets,
    status: Status | None = None,
    assignee_id: str | None = None,
    group_id: uuid.UUID | None = None,
    requester_contact_id: uuid.UUID | None = None,
    priority: Priority | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[TicketPublic]:
    """List tickets in creation order (filters: status, assignee, group, requester, priority)."""
    rows, nxt = await svc.list_tickets(
        status=status,
        assignee_id=assignee_id,
        group_id=group_id,
        requester_contact_id=requester_contact_id,
        priority=priority,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[TicketPublic.model_validate(r) for r in rows], next_cursor=nxt)


@tickets_router.get("/{ticket_id}", response_model=TicketPublic)
async def get_ticket(ticket_id: uuid.UUID, svc: Tickets, response: Response) -> TicketPublic:
    """A ticket with its SLA clocks and CSAT state."""
    out: TicketPublic = _out(TicketPublic, await svc.get(ticket_id), response)
    return out


@tickets_router.patch("/{ticket_id}", response_model=TicketPublic)
async def update_ticket(
    ticket_id: uuid.UUID,
    body: TicketPatch,
    svc: Tickets,
    response: Response,
    if_match: IfMatch = None,
) -> TicketPublic:
    """Change fields, status (closed is final) or assignment (If-Match required)."""
    out: TicketPublic = _out(TicketPublic, await svc.update(ticket_id, body, if_match), response)
    return out


@tickets_router.post("/{ticket_id}/comments", status_code=201, response_model=CommentPublic)
async def add_comment(
    ticket_id: uuid.UUID, body: CommentIn, svc: Tickets, response: Response
) -> CommentPublic:
    """Add a comment; a public agent comment is the reply the SLA measures."""
    comment, ticket = await svc.comment(ticket_id, body)
    set_etag(response, ticket["version"])
    return CommentPublic.model_validate(comment)


@tickets_router.get("/{ticket_id}/comments", response_model=Page[CommentPublic])
async def list_comments(ticket_id: uuid.UUID, svc: Tickets) -> Page[CommentPublic]:
    """The ticket's comments in order (internal notes only for agents)."""
    rows = await svc.comments(ticket_id)
    return Page(items=[CommentPublic.model_validate(r) for r in rows], next_cursor=None)


@tickets_router.get("/{ticket_id}/suggested-articles", response_model=SearchResult)
async def suggested_articles(
    ticket_id: uuid.UUID,
    svc: Tickets,
    session: SessionDep,
    locale: str = "en",
    limit: Annotated[int, Query(ge=1, le=25)] = 5,
) -> SearchResult:
    """Published KB articles related to the ticket's subject and description."""
    row = await svc.fetch(ticket_id)
    hits = await kb.suggest(
        session, svc.caller.tenant, row["subject"], row["description"], locale, limit
    )
    return SearchResult.model_validate({"items": hits})


# --- groups ----------------------------------------------------------------------------------

groups_router = APIRouter(prefix="/v1/groups", tags=["groups"])


@groups_router.post("", status_code=201, response_model=GroupPublic)
async def create_group(
    body: GroupIn, session: SessionDep, caller: CallerDep, response: Response
) -> GroupPublic:
    """Create a routing group (admin)."""
    out: GroupPublic = _out(GroupPublic, await config.create_group(session, caller, body), response)
    return out


@groups_router.get("", response_model=Page[GroupPublic])
async def list_groups(session: SessionDep, caller: CallerDep) -> Page[GroupPublic]:
    """Every group of the tenant."""
    _reader(caller)
    rows = await config.list_groups(session, caller.tenant)
    return Page(items=[GroupPublic.model_validate(r) for r in rows], next_cursor=None)


@groups_router.get("/{group_id}", response_model=GroupPublic)
async def get_group(
    group_id: uuid.UUID, session: SessionDep, caller: CallerDep, response: Response
) -> GroupPublic:
    """One group."""
    _reader(caller)
    out: GroupPublic = _out(
        GroupPublic, await config.get_group(session, caller.tenant, group_id), response
    )
    return out


@groups_router.patch("/{group_id}", response_model=GroupPublic)
async def update_group(
    group_id: uuid.UUID,
    body: GroupPatch,
    session: SessionDep,
    caller: CallerDep,
    response: Response,
    if_match: IfMatch = None,
) -> GroupPublic:
    """Change a group's name, strategy or agents (admin, If-Match)."""
    row = await config.update_group(session, caller, group_id, body, if_match)
    out: GroupPublic = _out(GroupPublic, row, response)
    return out


@groups_router.delete("/{group_id}", status_code=204)
async def delete_group(
    group_id: uuid.UUID, session: SessionDep, caller: CallerDep, if_match: IfMatch = None
) -> None:
    """Delete a group (admin, If-Match)."""
    await config.delete_group(session, caller, group_id, if_match)


# --- business hours --------------------------------------------------------------------------

bh_router = APIRouter(prefix="/v1/business-hours", tags=["sla"])


@bh_router.post("", status_code=201, response_model=BusinessHoursPublic)
async def create_business_hours(
    body: BusinessHoursIn, session: SessionDep, caller: CallerDep, response: Response
) -> BusinessHoursPublic:
    """Create a calendar: IANA zone, weekly intervals, holidays (admin)."""
    row = await config.create_business_hours(session, caller, body)
    out: BusinessHoursPublic = _out(BusinessHoursPublic, row, response)
    return out


@bh_router.get("", response_model=Page[BusinessHoursPublic])
async def list_business_hours(session: SessionDep, caller: CallerDep) -> Page[BusinessHoursPublic]:
    """Every calendar of the tenant."""
    _reader(caller)
    rows = await config.list_business_hours(session, caller.tenant)
    return Page(items=[BusinessHoursPublic.model_validate(r) for r in rows], next_cursor=None)


@bh_router.get("/{bh_id}", response_model=BusinessHoursPublic)
async def get_business_hours(
    bh_id: uuid.UUID, session: SessionDep, caller: CallerDep, response: Response
) -> BusinessHoursPublic:
    """One calendar."""
    _reader(caller)
    row = await config.get_business_hours(session, caller.tenant, bh_id)
    out: BusinessHoursPublic = _out(BusinessHoursPublic, row, response)
    return out


@bh_router.patch("/{bh_id}", response_model=BusinessHoursPublic)
async def update_business_hours(
    bh_id: uuid.UUID,
    body: BusinessHoursPatch,
    session: SessionDep,
    caller: CallerDep,
    response: Response,
    if_match: IfMatch = None,
) -> BusinessHoursPublic:
    """Change a calendar (admin, If-Match); running clocks keep their due times."""
    row = await config.update_business_hours(session, caller, bh_id, body, if_match)
    out: BusinessHoursPublic = _out(BusinessHoursPublic, row, response)
    return out


@bh_router.delete("/{bh_id}", status_code=204)
async def delete_business_hours(
    bh_id: uuid.UUID, session: SessionDep, caller: CallerDep, if_match: IfMatch = None
) -> None:
    """Delete a calendar no policy uses (admin, If-Match)."""
    await config.delete_business_hours(session, caller, bh_id, if_match)


# --- SLA policies ----------------------------------------------------------------------------

policies_router = APIRouter(prefix="/v1/sla-policies", tags=["sla"])


@policies_router.post("", status_code=201, response_model=SlaPolicyPublic)
async def create_policy(
    body: SlaPolicyIn, session: SessionDep, caller: CallerDep, response: Response
) -> SlaPolicyPublic:
    """Create an SLA policy (admin); policies are evaluated by position, first match wins."""
    out: SlaPolicyPublic = _out(
        SlaPolicyPublic, await config.create_policy(session, caller, body), response
    )
    return out


@policies_router.get("", response_model=Page[SlaPolicyPublic])
async def list_policies(session: SessionDep, caller: CallerDep) -> Page[SlaPolicyPublic]:
    """Policies in evaluation order."""
    _reader(caller)
    rows = await config.list_policies(session, caller.tenant)
    return Page(items=[SlaPolicyPublic.model_validate(r) for r in rows], next_cursor=None)


@policies_router.get("/{policy_id}", response_model=SlaPolicyPublic)
async def get_policy(
    policy_id: uuid.UUID, session: SessionDep, caller: CallerDep, response: Response
) -> SlaPolicyPublic:
    """One policy."""
    _reader(caller)
    out: SlaPolicyPublic = _out(
        SlaPolicyPublic, await config.get_policy(session, caller.tenant, policy_id), response
    )
    return out


@policies_router.patch("/{policy_id}", response_model=SlaPolicyPublic)
async def update_policy(
    policy_id: uuid.UUID,
    body: SlaPolicyPatch,
    session: SessionDep,
    caller: CallerDep,
    response: Response,
    if_match: IfMatch = None,
) -> SlaPolicyPublic:
    """Change a policy (admin, If-Match); applies to tickets matched afterwards."""
    row = await config.update_policy(session, caller, policy_id, body, if_match)
    out: SlaPolicyPublic = _out(SlaPolicyPublic, row, response)
    return out


@policies_router.delete("/{policy_id}", status_code=204)
async def delete_policy(
    policy_id: uuid.UUID, session: SessionDep, caller: CallerDep, if_match: IfMatch = None
) -> None:
    """Delete a policy (admin, If-Match)."""
    await config.delete_policy(session, caller, policy_id, if_match)


# --- knowledge base --------------------------------------------------------------------------

kb_router = APIRouter(prefix="/v1/kb", tags=["knowledge base"])


@kb_router.post("/articles", status_code=201, response_model=ArticlePublic)
async def create_article(
    body: ArticleIn, session: SessionDep, caller: CallerDep, response: Response
) -> ArticlePublic:
    """Create an article (agents)."""
    out: ArticlePublic = _out(ArticlePublic, await kb.create(session, caller, body), response)
    return out


@kb_router.get("/articles", response_model=Page[ArticlePublic])
async def list_articles(
    session: SessionDep,
    caller: CallerDep,
    locale: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[ArticlePublic]:
    """Articles in creation order (drafts only for agents)."""
    rows, nxt = await kb.list_articles(session, caller, locale, limit, cursor)
    return Page(items=[ArticlePublic.model_validate(r) for r in rows], next_cursor=nxt)


@kb_router.get("/articles/{article_id}", response_model=ArticlePublic)
async def get_article(
    article_id: uuid.UUID, session: SessionDep, caller: CallerDep, response: Response
) -> ArticlePublic:
    """One article."""
    out: ArticlePublic = _out(ArticlePublic, await kb.get(session, caller, article_id), response)
    return out


@kb_router.patch("/articles/{article_id}", response_model=ArticlePublic)
async def update_article(
    article_id: uuid.UUID,
    body: ArticlePatch,
    session: SessionDep,
    caller: CallerDep,
    response: Response,
    if_match: IfMatch = None,
) -> ArticlePublic:
    """Change an article (agents, If-Match)."""
    out: ArticlePublic = _out(
        ArticlePublic, await kb.update(session, caller, article_id, body, if_match), response
    )
    return out


@kb_router.delete("/articles/{article_id}", status_code=204)
async def delete_article(
    article_id: uuid.UUID, session: SessionDep, caller: CallerDep, if_match: IfMatch = None
) -> None:
    """Delete an article (agents, If-Match)."""
    await kb.delete(session, caller, article_id, if_match)


@kb_router.get("/search", response_model=SearchResult)
async def search(
    session: SessionDep,
    caller: CallerDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    locale: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: str | None = None,
) -> SearchResult:
    """Ranked full-text search over published articles (title over body), with snippets."""
    hits, nxt = await kb.search(session, caller.tenant, q, locale, limit, cursor)
    return SearchResult.model_validate({"items": hits, "next_cursor": nxt})


# --- surveys and reports ---------------------------------------------------------------------

surveys_router = APIRouter(prefix="/v1/surveys", tags=["surveys"])


@surveys_router.post("/nps", status_code=201, response_model=NpsSurveyOut)
async def create_nps(
    body: NpsSurveyIn, session: SessionDep, caller: CallerDep, settings: SettingsDep
) -> NpsSurveyOut:
    """Create an NPS survey with one single-use link per contact (admin)."""
    out = await surveys.create_nps(session, settings, caller, body.name, body.contact_ids)
    return NpsSurveyOut.model_validate(out)


public_router = APIRouter(prefix="/v1/public", tags=["public surveys"])


@public_router.post("/csat/{token}", response_model=AnswerAccepted)
async def answer_csat(token: str, body: CsatAnswer, session: SessionDep) -> AnswerAccepted:
    """Answer a CSAT survey (no JWT: the token is the credential; works once, expires)."""
    await surveys.answer_csat(session, token, body.score, body.comment)
    return AnswerAccepted()


@public_router.post("/nps/{token}", response_model=AnswerAccepted)
async def answer_nps(token: str, body: NpsAnswer, session: SessionDep) -> AnswerAccepted:
    """Answer an NPS survey (no JWT: the token is the credential; works once, expires)."""
    await surveys.answer_nps(session, token, body.score, body.comment)
    return AnswerAccepted()


reports_router = APIRouter(prefix="/v1/reports", tags=["reports"])
From = Annotated[datetime | None, Query(alias="from")]
To = Annotated[datetime | None, Query(alias="to")]


@reports_router.get("/sla")
async def sla_report(
    session: SessionDep,
    caller: CallerDep,
    from_: From = None,
    to: To = None,
    group_by: Literal["agent", "group", "priority"] = "priority",
) -> dict[str, Any]:
    """Share of SLA targets met, breaches, median first response and resolution times."""
    _reader(caller)
    return await reports.sla_report(session, caller.tenant, from_, to, group_by)


@reports_router.get("/csat")
async def csat_report(
    session: SessionDep,
    caller: CallerDep,
    from_: From = None,
    to: To = None,
    group_by: Literal["agent", "group", "none"] = "none",
) -> dict[str, Any]:
    """CSAT average and share satisfied (4-5), overall or by agent or group."""
    _reader(caller)
    return await reports.csat_report(session, caller.tenant, from_, to, group_by)


@reports_router.get("/nps")
async def nps_report(
    session: SessionDep, caller: CallerDep, survey_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Promoters (9-10), passives (7-8), detractors (0-6) and NPS, one decimal."""
    _reader(caller)
    return await reports.nps_report(session, caller.tenant, survey_id)


ROUTERS = [
    tickets_router,
    groups_router,
    bh_router,
    policies_router,
    kb_router,
    surveys_router,
    public_router,
    reports_router,
]
