"""HTTP routers of the core: thin wrappers that resolve the caller and call the services."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from chassis.http import Page, set_etag
from chassis.problems import invalid
from pipeline.core import deal_repo
from pipeline.core.common import CallerDep, IfMatch, Row, Sort
from pipeline.core.deals import DealService, deal_public
from pipeline.core.orders import OrderService, order_public
from pipeline.core.pipelines import PipelineService
from pipeline.core.schemas import (
    BatchIn,
    BatchItemResult,
    BatchOut,
    DealIn,
    DealPublic,
    DealStatus,
    LostIn,
    MemberRoleIn,
    OrderIn,
    OrderPublic,
    OrderStatus,
    PipelineIn,
    PipelinePublic,
    ReopenIn,
    StageHistoryPublic,
    TeamIn,
    TeamPublic,
    WonIn,
)
from pipeline.core.teams import TeamService
from pipeline.settings import PipelineSettings

Limit = Annotated[int, Query(ge=1, le=200)]
UserIdPath = Annotated[str, Path(min_length=1, max_length=200)]


async def get_settings(request: Request) -> PipelineSettings:
    settings: PipelineSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[PipelineSettings, Depends(get_settings)]


async def team_service(caller: CallerDep) -> TeamService:
    return TeamService(caller)


async def pipeline_service(caller: CallerDep) -> PipelineService:
    return PipelineService(caller)


async def deal_service(caller: CallerDep, settings: SettingsDep) -> DealService:
    return DealService(caller, settings.batch_max_items)


async def order_service(caller: CallerDep, settings: SettingsDep) -> OrderService:
    return OrderService(caller, settings.batch_max_items)


Teams = Annotated[TeamService, Depends(team_service)]
Pipelines = Annotated[PipelineService, Depends(pipeline_service)]
Deals = Annotated[DealService, Depends(deal_service)]
Orders = Annotated[OrderService, Depends(order_service)]


def _etag(row: Row, response: Response | None) -> None:
    if response is not None:
        set_etag(response, row["version"])


def team_out(row: Row, response: Response | None = None) -> TeamPublic:
    _etag(row, response)
    return TeamPublic.model_validate(row)


def pipeline_out(row: Row, response: Response | None = None) -> PipelinePublic:
    _etag(row, response)
    return PipelinePublic.model_validate(row)


def deal_out(row: Row, response: Response | None = None) -> DealPublic:
    _etag(row, response)
    return deal_public(row)


def order_out(row: Row, response: Response | None = None) -> OrderPublic:
    _etag(row, response)
    return order_public(row)


def _check_system(system: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.:-]{0,62}", system):
        raise invalid("system", "must be a lower-case slug such as sap")


def _batch_out(outcomes: list[Any]) -> BatchOut:
    return BatchOut(
        items=[
            BatchItemResult(
                index=o.index,
                status=o.status,
                id=o.row["id"] if o.row else None,
                version=o.row["version"] if o.row else None,
                errors=[e.as_dict() for e in o.errors],
            )
            for o in outcomes
        ]
    )


# --- teams ------------------------------------------------------------------------------------

teams_router = APIRouter(prefix="/v1/teams", tags=["teams"])


@teams_router.post("", status_code=201, response_model=TeamPublic)
async def create_team(body: TeamIn, svc: Teams, response: Response) -> TeamPublic:
    """Create a team (admin only)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/teams/{row['id']}"
    return team_out(row, response)


@teams_router.get("", response_model=Page[TeamPublic])
async def list_teams(
    svc: Teams,
    parent_id: uuid.UUID | None = None,
    sort: str = "created_at",
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[TeamPublic]:
    """List teams (filter: parent_id)."""
    rows, next_cursor = await svc.search(parent_id, Sort.parse(sort), cursor, limit)
    return Page(items=[team_out(r) for r in rows], next_cursor=next_cursor)


@teams_router.get("/{team_id}", response_model=TeamPublic)
async def get_team(team_id: uuid.UUID, svc: Teams, response: Response) -> TeamPublic:
    """Read a team with its members."""
    return team_out(await svc.get(team_id), response)


@teams_router.patch("/{team_id}", response_model=TeamPublic)
async def update_team(
    team_id: uuid.UUID, body: TeamIn, svc: Teams, response: Response, if_match: IfMatch = None
) -> TeamPublic:
    """Rename, re-parent (no cycles) or replace the members; admin only, needs If-Match."""
    return team_out(await svc.update(team_id, body, if_match), response)


@teams_router.delete("/{team_id}", status_code=204)
async def delete_team(team_id: uuid.UUID, svc: Teams, if_match: IfMatch = None) -> Response:
    """Delete a team without sub-teams (its memberships go with it); admin only."""
    await svc.delete(team_id, if_match)
    return Response(status_code=204)


@teams_router.put("/{team_id}/members/{user_id}", response_model=TeamPublic)
async def put_member(
    team_id: uuid.UUID,
    user_id: UserIdPath,
    body: MemberRoleIn,
    svc: Teams,
    response: Response,
    if_match: IfMatch = None,
) -> TeamPublic:
    """Add a member or change their role; admin only."""
    return team_out(await svc.put_member(team_id, user_id, body.role, if_match), response)


@teams_router.delete("/{team_id}/members/{user_id}", response_model=TeamPublic)
async def remove_member(
    team_id: uuid.UUID,
    user_id: UserIdPath,
    svc: Teams,
    response: Response,
    if_match: IfMatch = None,
) -> TeamPublic:
    """Remove a member; admin only."""
    return team_out(await svc.remove_member(team_id, user_id, if_match), response)


# --- pipelines --------------------------------------------------------------------------------

pipelines_router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])


@pipelines_router.post("", status_code=201, response_model=PipelinePublic)
async def create_pipeline(body: PipelineIn, svc: Pipelines, response: Response) -> PipelinePublic:
    """Create a pipeline with its ordered stages (admin only)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/pipelines/{row['id']}"
    return pipeline_out(row, response)


@pipelines_router.get("", response_model=Page[PipelinePublic])
async def list_pipelines(
    svc: Pipelines, sort: str = "created_at", limit: Limit = 50, cursor: str | None = None
) -> Page[PipelinePublic]:
    """List pipelines with their stages."""
    rows, next_cursor = await svc.search(Sort.parse(sort), cursor, limit)
    return Page(items=[pipeline_out(r) for r in rows], next_cursor=next_cursor)


@pipelines_router.get("/{pipeline_id}", response_model=PipelinePublic)
async def get_pipeline(
    pipeline_id: uuid.UUID, svc: Pipelines, response: Response
) -> PipelinePublic:
    """Read a pipeline with its stages in order."""
    return pipeline_out(await svc.get(pipeline_id), response)


@pipelines_router.patch("/{pipeline_id}", response_model=PipelinePublic)
async def update_pipeline(
    pipeline_id: uuid.UUID,
    body: PipelineIn,
    svc: Pipelines,
    response: Response,
    if_match: IfMatch = None,
) -> PipelinePublic:
    """Rename or replace the stages (ids keep stages); admin only, needs If-Match."""
    return pipeline_out(await svc.update(pipeline_id, body, if_match), response)


@pipelines_router.delete("/{pipeline_id}", status_code=204)
async def delete_pipeline(
    pipeline_id: uuid.UUID, svc: Pipelines, if_match: IfMatch = None
) -> Response:
    """Delete a pipeline no deal uses; admin only, needs If-Match."""
    await svc.delete(pipeline_id, if_match)
    return Response(status_code=204)


# --- deals ------------------------------------------------------------------------------------

deals_router = APIRouter(prefix="/v1/deals", tags=["deals"])


@deals_router.post("", status_code=201, response_model=DealPublic)
async def create_deal(body: DealIn, svc: Deals, response: Response) -> DealPublic:
    """Create a deal (in the pipeline's first open stage unless stage_id is given)."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/deals/{row['id']}"
    return deal_out(row, response)


@deals_router.get("", response_model=Page[DealPublic])
async def list_deals(
    svc: Deals,
    owner_id: str | None = None,
    pipeline_id: uuid.UUID | None = None,
    stage_id: uuid.UUID | None = None,
    status: DealStatus | None = None,
    contact_id: uuid.UUID | None = None,
    company_id: uuid.UUID | None = None,
    expected_close_from: date | None = None,
    expected_close_to: date | None = None,
    updated_since: datetime | None = None,
    sort: str = "created_at",
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[DealPublic]:
    """List the deals you may see, with filters; sort created_at or updated_at (- for desc)."""
    f = deal_repo.DealFilter(
        owner_id=owner_id,
        pipeline_id=pipeline_id,
        stage_id=stage_id,
        status=status,
        contact_id=contact_id,
        company_id=company_id,
        expected_close_from=expected_close_from,
        expected_close_to=expected_close_to,
        updated_since=updated_since,
    )
    rows, next_cursor = await svc.search(f, Sort.parse(sort), cursor, limit)
    return Page(items=[deal_out(r) for r in rows], next_cursor=next_cursor)


@deals_router.post("/batch", response_model=BatchOut)
async def batch_deals(body: BatchIn, svc: Deals) -> BatchOut:
    """Create or update up to 1000 deals (by id, else external ids); one result per item."""
    return _batch_out(await svc.batch(body.items))


@deals_router.put(
    "/by-external-id/{system}/{external_id}",
    response_model=DealPublic,
    responses={201: {"model": DealPublic, "description": "Created"}},
)
async def upsert_deal(
    system: str,
    external_id: str,
    body: DealIn,
    svc: Deals,
    response: Response,
    if_match: IfMatch = None,
) -> DealPublic:
    """Create or update the deal with this external id (201 created, 200 updated)."""
    _check_system(system)
    row, created = await svc.upsert_by_external_id(system, external_id, body, if_match)
    response.status_code = 201 if created else 200
    return deal_out(row, response)


@deals_router.get("/{deal_id}", response_model=DealPublic)
async def get_deal(deal_id: uuid.UUID, svc: Deals, response: Response) -> DealPublic:
    """Read a deal."""
    return deal_out(await svc.visible(deal_id), response)


@deals_router.patch("/{deal_id}", response_model=DealPublic)
async def update_deal(
    deal_id: uuid.UUID, body: DealIn, svc: Deals, response: Response, if_match: IfMatch = None
) -> DealPublic:
    """Change the fields sent (a stage_id moves the deal); needs If-Match."""
    return deal_out(await svc.update(deal_id, body, if_match), response)


@deals_router.delete("/{deal_id}", status_code=204)
async def delete_deal(deal_id: uuid.UUID, svc: Deals, if_match: IfMatch = None) -> Response:
    """Delete a deal; needs If-Match."""
    await svc.delete(deal_id, if_match)
    return Response(status_code=204)


@deals_router.post("/{deal_id}/won", response_model=DealPublic)
async def win_deal(
    deal_id: uuid.UUID, body: WonIn, svc: Deals, response: Response, if_match: IfMatch = None
) -> DealPublic:
    """Mark an open deal won: it moves to the pipeline's won stage."""
    return deal_out(await svc.won(deal_id, body, if_match), response)


@deals_router.post("/{deal_id}/lost", response_model=DealPublic)
async def lose_deal(
    deal_id: uuid.UUID, body: LostIn, svc: Deals, response: Response, if_match: IfMatch = None
) -> DealPublic:
    """Mark an open deal lost (with a reason): it moves to the pipeline's lost stage."""
    return deal_out(await svc.lost(deal_id, body, if_match), response)


@deals_router.post("/{deal_id}/reopen", response_model=DealPublic)
async def reopen_deal(
    deal_id: uuid.UUID, body: ReopenIn, svc: Deals, response: Response, if_match: IfMatch = None
) -> DealPublic:
    """Reopen a won or lost deal, into the stage it closed from unless stage_id is given."""
    return deal_out(await svc.reopen(deal_id, body, if_match), response)


@deals_router.get("/{deal_id}/stage-history", response_model=Page[StageHistoryPublic])
async def deal_stage_history(deal_id: uuid.UUID, svc: Deals) -> Page[StageHistoryPublic]:
    """Every stay of the deal in a stage, oldest first."""
    rows = await svc.history(deal_id)
    return Page(
        items=[
            StageHistoryPublic.model_validate({**r, "amount": format(r["amount"], "f")})
            for r in rows
        ]
    )


# --- orders -----------------------------------------------------------------------------------

orders_router = APIRouter(prefix="/v1/orders", tags=["orders"])


@orders_router.put(
    "/by-external-id/{system}/{external_id}",
    response_model=OrderPublic,
    responses={201: {"model": OrderPublic, "description": "Created"}},
)
async def upsert_order(
    system: str,
    external_id: str,
    body: OrderIn,
    svc: Orders,
    response: Response,
    if_match: IfMatch = None,
) -> OrderPublic:
    """Create or update the order with this external id (201 created, 200 updated)."""
    _check_system(system)
    row, created = await svc.upsert_by_external_id(system, external_id, body, if_match)
    response.status_code = 201 if created else 200
    return order_out(row, response)


@orders_router.post("/batch", response_model=BatchOut)
async def batch_orders(body: BatchIn, svc: Orders) -> BatchOut:
    """Create or update up to 1000 orders (by id, else external ids); one result per item."""
    return _batch_out(await svc.batch(body.items))


@orders_router.get("", response_model=Page[OrderPublic])
async def list_orders(
    svc: Orders,
    contact_id: uuid.UUID | None = None,
    company_id: uuid.UUID | None = None,
    deal_id: uuid.UUID | None = None,
    status: OrderStatus | None = None,
    sort: str = "created_at",
    limit: Limit = 50,
    cursor: str | None = None,
) -> Page[OrderPublic]:
    """List the orders you may see (filters: contact_id, company_id, deal_id, status)."""
    filters = {
        "contact_id": contact_id,
        "company_id": company_id,
        "deal_id": deal_id,
        "status": status,
    }
    rows, next_cursor = await svc.search(filters, Sort.parse(sort), cursor, limit)
    return Page(items=[order_out(r) for r in rows], next_cursor=next_cursor)


@orders_router.get("/{order_id}", response_model=OrderPublic)
async def get_order(order_id: uuid.UUID, svc: Orders, response: Response) -> OrderPublic:
    """Read an order."""
    return order_out(await svc.get(order_id), response)


ROUTERS = [teams_router, pipelines_router, deals_router, orders_router]
