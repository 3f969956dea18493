"""HTTP routers: thin wrappers that resolve the caller and call the services."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response

from chassis.auth import PrincipalDep
from chassis.db import SessionDep
from chassis.http import Page, set_etag
from commissions.access import Caller
from commissions.insights import InsightService
from commissions.plans import PlanService
from commissions.quotas import QuotaService, team_uuid
from commissions.schemas import (
    AdjustmentIn,
    AdjustmentOut,
    AssignmentIn,
    AssignmentOut,
    AuditEntry,
    DisputeIn,
    DisputeOut,
    DisputePatch,
    EstimateOut,
    LeaderboardEntry,
    PeriodOut,
    PlanIn,
    PlanOut,
    QuotaIn,
    QuotaOut,
    RecomputeOut,
    StatementOut,
)
from commissions.statements import StatementService

Row = dict[str, Any]
IfMatch = Annotated[str | None, Header()]
Limit = Annotated[int, Query(ge=1, le=200)]


async def get_caller(
    principal: PrincipalDep, x_origin: Annotated[str | None, Header()] = None
) -> Caller:
    return Caller(principal, (x_origin or principal.client or "")[:200])


CallerDep = Annotated[Caller, Depends(get_caller)]


async def plan_service(session: SessionDep, caller: CallerDep) -> PlanService:
    return PlanService(session, caller)


async def quota_service(session: SessionDep, caller: CallerDep) -> QuotaService:
    return QuotaService(session, caller)


async def statement_service(session: SessionDep, caller: CallerDep) -> StatementService:
    return StatementService(session, caller)


async def insight_service(session: SessionDep, caller: CallerDep) -> InsightService:
    return InsightService(session, caller)


Plans = Annotated[PlanService, Depends(plan_service)]
Quotas = Annotated[QuotaService, Depends(quota_service)]
Statements = Annotated[StatementService, Depends(statement_service)]
Insights = Annotated[InsightService, Depends(insight_service)]


def _etag(response: Response, row: Row) -> Row:
    set_etag(response, row["version"])
    return row


# --- plans ----------------------------------------------------------------------------------

plans_router = APIRouter(prefix="/v1/commission-plans", tags=["commission plans"])


@plans_router.post("", status_code=201, response_model=PlanOut)
async def create_plan(body: PlanIn, svc: Plans, response: Response) -> Row:
    """Create a commission plan with its first effective-dated version (admin)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/commission-plans/{row['id']}"
    return _etag(response, row)


@plans_router.get("", response_model=Page[PlanOut])
async def list_plans(svc: Plans, limit: Limit = 50, cursor: str | None = None) -> Row:
    """List commission plans with their version history."""
    items, nxt = await svc.list_all(limit, cursor)
    return {"items": items, "next_cursor": nxt}


@plans_router.get("/{plan_id}", response_model=PlanOut)
async def get_plan(plan_id: uuid.UUID, svc: Plans, response: Response) -> Row:
    """A commission plan and every version of it."""
    return _etag(response, await svc.get(plan_id))


@plans_router.put("/{plan_id}", response_model=PlanOut)
async def add_plan_version(
    plan_id: uuid.UUID, body: PlanIn, svc: Plans, response: Response, if_match: IfMatch = None
) -> Row:
    """Add a new effective-dated version (history kept; needs If-Match; admin)."""
    return _etag(response, await svc.add_version(plan_id, body, if_match))


@plans_router.post("/{plan_id}/assignments", status_code=201, response_model=AssignmentOut)
async def assign_plan(plan_id: uuid.UUID, body: AssignmentIn, svc: Plans) -> Row:
    """Assign the plan to a user or a team (and its sub-teams) for a date range (admin)."""
    return await svc.add_assignment(plan_id, body)


@plans_router.get("/{plan_id}/assignments", response_model=Page[AssignmentOut])
async def list_assignments(plan_id: uuid.UUID, svc: Plans) -> Row:
    """Assignments of a plan."""
    return {"items": await svc.assignments(plan_id), "next_cursor": None}


# --- quotas ---------------------------------------------------------------------------------

quotas_router = APIRouter(prefix="/v1/quotas", tags=["quotas"])


@quotas_router.get("", response_model=Page[QuotaOut])
async def list_quotas(
    svc: Quotas,
    period: str | None = None,
    user_id: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Row:
    """User quotas the caller may see."""
    items, nxt = await svc.list_all(period, user_id, limit, cursor)
    return {"items": items, "next_cursor": nxt}


@quotas_router.put(
    "/teams/{team_id}/{period}",
    response_model=QuotaOut,
    responses={201: {"model": QuotaOut, "description": "Created"}},
)
async def set_team_quota(
    team_id: str, period: str, body: QuotaIn, svc: Quotas, response: Response,
    if_match: IfMatch = None,
) -> Row:  # fmt: skip
    """Set a team's quota for a period (a manager of the team, or an admin)."""
    row, created = await svc.put("team", team_uuid(team_id), period, body, if_match)
    response.status_code = 201 if created else 200
    return _etag(response, row)


@quotas_router.get("/teams/{team_id}/{period}", response_model=QuotaOut)
async def get_team_quota(team_id: str, period: str, svc: Quotas, response: Response) -> Row:
    """A team's quota for a period."""
    return _etag(response, await svc.get("team", team_uuid(team_id), period))


@quotas_router.put(
    "/{user_id}/{period}",
    response_model=QuotaOut,
    responses={201: {"model": QuotaOut, "description": "Created"}},
)
async def set_user_quota(
    user_id: str, period: str, body: QuotaIn, svc: Quotas, response: Response,
    if_match: IfMatch = None,
) -> Row:  # fmt: skip
    """Set a user's quota (a manager of the user, or an admin; If-Match when replacing)."""
    row, created = await svc.put("user", user_id, period, body, if_match)
    response.status_code = 201 if created else 200
    return _etag(response, row)


@quotas_router.get("/{user_id}/{period}", response_model=QuotaOut)
async def get_user_quota(user_id: str, period: str, svc: Quotas, response: Response) -> Row:
    """A user's quota for a period."""
    return _etag(response, await svc.get("user", user_id, period))


# --- statements -----------------------------------------------------------------------------

statements_router = APIRouter(prefix="/v1/statements", tags=["statements"])


@statements_router.get("", response_model=Page[StatementOut])
async def list_statements(
    svc: Statements,
    user_id: str | None = None,
    period: str | None = None,
    status: Literal["draft", "approved", "paid"] | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Row:
    """Statements the caller may see (own for a rep, their teams' for a manager)."""
    items, nxt = await svc.list_all(user_id, period, status, limit, cursor)
    return {"items": items, "next_cursor": nxt}


@statements_router.get("/{statement_id}", response_model=StatementOut)
async def get_statement(statement_id: uuid.UUID, svc: Statements, response: Response) -> Row:
    """One statement with the lines that explain it."""
    return _etag(response, await svc.get(statement_id))


@statements_router.post("/{statement_id}/approve", response_model=StatementOut)
async def approve_statement(
    statement_id: uuid.UUID, svc: Statements, response: Response, if_match: IfMatch = None
) -> Row:
    """Approve a draft statement (a manager of its user; If-Match)."""
    return _etag(response, await svc.approve(statement_id, if_match))


@statements_router.post("/{statement_id}/pay", response_model=StatementOut)
async def pay_statement(
    statement_id: uuid.UUID, svc: Statements, response: Response, if_match: IfMatch = None
) -> Row:
    """Mark an approved statement paid (admin; If-Match)."""
    return _etag(response, await svc.pay(statement_id, if_match))


@statements_router.post("/{statement_id}/disputes", status_code=201, response_model=DisputeOut)
async def open_dispute(
    statement_id: uuid.UUID, body: DisputeIn, svc: Statements, response: Response
) -> Row:
    """Dispute one line of your own statement, with a reason."""
    row = await svc.open_dispute(statement_id, body)
    response.headers["Location"] = f"/v1/disputes/{row['id']}"
    return _etag(response, row)


# --- periods --------------------------------------------------------------------------------

periods_router = APIRouter(prefix="/v1/periods", tags=["periods"])


@periods_router.get("/{period}", response_model=PeriodOut)
async def get_period(period: str, svc: Statements) -> Row:
    """Whether a period is closed and how many statements it has."""
    return await svc.period(period)


@periods_router.post("/{period}/close", response_model=PeriodOut)
async def close_period(period: str, svc: Statements) -> Row:
    """Close a period: lock every statement of it (admin)."""
    return await svc.close(period)


@periods_router.post("/{period}/recompute", response_model=RecomputeOut)
async def recompute_period(period: str, svc: Statements) -> Row:
    """Recompute every statement of a period (admin; idempotent)."""
    out = await svc.recompute(period)
    return {
        "period": period,
        "statements": out.created + out.updated + out.unchanged,
        "created": out.created,
        "updated": out.updated,
        "unchanged": out.unchanged,
    }


# --- adjustments ----------------------------------------------------------------------------

adjustments_router = APIRouter(prefix="/v1/adjustments", tags=["adjustments"])


@adjustments_router.post("", status_code=201, response_model=AdjustmentOut)
async def add_adjustment(body: AdjustmentIn, svc: Statements, response: Response) -> Row:
    """Book a manual adjustment into an open period (a manager of the user, or an admin)."""
    row = await svc.add_adjustment(body)
    response.headers["Location"] = f"/v1/adjustments/{row['id']}"
    return row


@adjustments_router.get("", response_model=Page[AdjustmentOut])
async def list_adjustments(
    svc: Statements,
    user_id: str | None = None,
    period: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Row:
    """Adjustments the caller may see, with who booked them."""
    items, nxt = await svc.adjustments(user_id, period, limit, cursor)
    return {"items": items, "next_cursor": nxt}


@adjustments_router.get("/{adjustment_id}", response_model=AdjustmentOut)
async def get_adjustment(adjustment_id: uuid.UUID, svc: Statements) -> Row:
    """One adjustment."""
    return await svc.adjustment(adjustment_id)


# --- disputes -------------------------------------------------------------------------------

disputes_router = APIRouter(prefix="/v1/disputes", tags=["disputes"])


@disputes_router.get("", response_model=Page[DisputeOut])
async def list_disputes(
    svc: Statements,
    status: Literal["open", "accepted", "rejected"] | None = None,
    user_id: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Row:
    """Disputes the caller may see."""
    items, nxt = await svc.disputes(status, user_id, limit, cursor)
    return {"items": items, "next_cursor": nxt}


@disputes_router.get("/{dispute_id}", response_model=DisputeOut)
async def get_dispute(dispute_id: uuid.UUID, svc: Statements, response: Response) -> Row:
    """One dispute."""
    return _etag(response, await svc.dispute(dispute_id))


@disputes_router.patch("/{dispute_id}", response_model=DisputeOut)
async def resolve_dispute(
    dispute_id: uuid.UUID,
    body: DisputePatch,
    svc: Statements,
    response: Response,
    if_match: IfMatch = None,
) -> Row:
    """Resolve a dispute: rejected, or accepted with an optional adjustment (a manager)."""
    return _etag(response, await svc.resolve(dispute_id, body, if_match))


# --- leaderboard, estimate, audit -----------------------------------------------------------

insights_router = APIRouter(tags=["leaderboard"])


@insights_router.get("/v1/leaderboard", response_model=Page[LeaderboardEntry])
async def leaderboard(
    svc: Insights,
    period: str,
    metric: Literal["attainment", "credit", "deals_won"] = "attainment",
    team_id: uuid.UUID | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Row:
    """Ranking of a period by attainment, credit or deals won; ties share a rank."""
    items, nxt = await svc.leaderboard(period, metric, team_id, limit, cursor)
    return {"items": items, "next_cursor": nxt}


@insights_router.get("/v1/commissions/estimate", response_model=EstimateOut)
async def estimate(
    svc: Insights,
    amount: Annotated[Decimal, Query(ge=0, allow_inf_nan=False, max_digits=20)],
    currency: Annotated[str, Query(pattern=r"^[A-Z]{3}$")],
    close_date: date | None = None,
    split: Annotated[Decimal, Query(gt=0, le=100, allow_inf_nan=False)] = Decimal(100),
    user_id: str | None = None,
    item: Annotated[list[str] | None, Query(max_length=50)] = None,
) -> Row:
    """What would I earn if this deal closed? (item=Product:quantity for spiffs)"""
    return await svc.estimate(
        user_id, amount, currency, close_date or datetime.now(UTC).date(), split, item or []
    )


@insights_router.get("/v1/commissions/audit", response_model=Page[AuditEntry])
async def audit_trail(
    svc: Statements,
    object_type: str | None = None,
    object_id: str | None = None,
    limit: Limit = 50,
    cursor: str | None = None,
) -> Row:
    """Who did what (admin)."""
    items, nxt = await svc.audit_log(object_type, object_id, limit, cursor)
    return {"items": items, "next_cursor": nxt}


ROUTERS = [
    plans_router,
    quotas_router,
    statements_router,
    periods_router,
    adjustments_router,
    disputes_router,
    insights_router,
]
