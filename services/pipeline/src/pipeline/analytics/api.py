"""HTTP routers of forecasting (`/v1/forecast`) and reports (`/v1/reports`): thin wrappers
that resolve the caller's scope and call the services."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Response
from fastapi import Request as FastAPIRequest

from chassis.auth import PrincipalDep
from chassis.db import SessionDep
from chassis.http import Page, set_etag
from pipeline.access import Scope, scope_of
from pipeline.analytics.adjustments import AdjustmentService
from pipeline.analytics.forecast import ForecastQuery, ForecastService, RateCache
from pipeline.analytics.periods import parse_period, window
from pipeline.analytics.reports import ReportService
from pipeline.analytics.schemas import (
    AccuracyOut,
    AdjustmentIn,
    AdjustmentOut,
    DealSizeOut,
    ForecastOut,
    FunnelOut,
    GroupBy,
    SalesCycleOut,
    SnapshotIn,
    SnapshotOut,
    WinRateGroupBy,
    WinRateOut,
)
from pipeline.analytics.snapshots import SnapshotService


async def get_scope(session: SessionDep, principal: PrincipalDep) -> Scope:
    return await scope_of(session, principal)


ScopeDep = Annotated[Scope, Depends(get_scope)]


def rates_of(app: FastAPI) -> RateCache:
    """The app's cache of stage win rates (one per process)."""
    cache: RateCache | None = getattr(app.state, "forecast_rates", None)
    if cache is None:
        cache = app.state.forecast_rates = RateCache()
    return cache


async def init_rate_cache(app: FastAPI) -> None:
    rates_of(app)


IfMatch = Annotated[str | None, Header()]
PeriodQ = Annotated[str, Query(description="Month 2026-11, quarter 2026-Q4 or year 2026")]
Limit = Annotated[int, Query(ge=1, le=200)]
From = Annotated[date | None, Query(alias="from", description="First day (UTC), inclusive")]
To = Annotated[date | None, Query(description="Last day (UTC), inclusive; default today")]
PipelineQ = Annotated[uuid.UUID | None, Query()]


async def rate_cache(request: FastAPIRequest) -> RateCache:
    return rates_of(request.app)


RatesDep = Annotated[RateCache, Depends(rate_cache)]


async def forecasts(session: SessionDep, scope: ScopeDep, rates: RatesDep) -> ForecastService:
    return ForecastService(session, scope, rates)


async def snapshots(session: SessionDep, scope: ScopeDep, rates: RatesDep) -> SnapshotService:
    return SnapshotService(session, scope, rates)


async def adjustments(
    session: SessionDep, principal: PrincipalDep, scope: ScopeDep
) -> AdjustmentService:
    return AdjustmentService(session, principal, scope)


async def reports(session: SessionDep, scope: ScopeDep) -> ReportService:
    return ReportService(session, scope)


Forecasts = Annotated[ForecastService, Depends(forecasts)]
Snapshots = Annotated[SnapshotService, Depends(snapshots)]
Adjustments = Annotated[AdjustmentService, Depends(adjustments)]
Reports = Annotated[ReportService, Depends(reports)]

forecast_router = APIRouter(prefix="/v1/forecast", tags=["forecast"])


@forecast_router.get("", response_model=ForecastOut)
async def get_forecast(
    svc: Forecasts,
    period: PeriodQ,
    group_by: GroupBy = GroupBy.owner,
    team_id: uuid.UUID | None = None,
) -> ForecastOut:
    """The forecast of a period per owner or team (rolled up the team tree) and currency."""
    return await svc.compute(ForecastQuery(parse_period(period), group_by, team_id))


@forecast_router.post("/snapshots", status_code=201, response_model=SnapshotOut)
async def take_snapshot(body: SnapshotIn, svc: Snapshots, response: Response) -> SnapshotOut:
    """Store an immutable snapshot of the forecast as the caller sees it now."""
    out = await svc.create(body)
    response.headers["Location"] = f"/v1/forecast/snapshots/{out.id}"
    return out


@forecast_router.get("/snapshots", response_model=Page[SnapshotOut])
async def list_snapshots(
    svc: Snapshots, period: str | None = None, cursor: str | None = None, limit: Limit = 50
) -> Page[SnapshotOut]:
    """Snapshots, oldest first (admins see all, others those they took)."""
    return await svc.list(period, cursor, limit)


@forecast_router.get("/snapshots/{snapshot_id}", response_model=SnapshotOut)
async def get_snapshot(snapshot_id: uuid.UUID, svc: Snapshots) -> SnapshotOut:
    """One snapshot."""
    return await svc.get(snapshot_id)


@forecast_router.get("/accuracy", response_model=AccuracyOut)
async def get_accuracy(svc: Snapshots, period: PeriodQ) -> AccuracyOut:
    """Each snapshot of the period against what has actually closed won."""
    return await svc.accuracy(period)


@forecast_router.put(
    "/adjustments",
    response_model=AdjustmentOut,
    responses={201: {"model": AdjustmentOut, "description": "Created"}},
)
async def put_adjustment(
    body: AdjustmentIn, svc: Adjustments, response: Response, if_match: IfMatch = None
) -> AdjustmentOut:
    """Set a manager's override of a subordinate's or team's category total (201 when new;
    If-Match required to change an existing one)."""
    out, created = await svc.put(body, if_match)
    response.status_code = 201 if created else 200
    set_etag(response, out.version)
    return out


@forecast_router.get("/adjustments", response_model=Page[AdjustmentOut])
async def list_adjustments(
    svc: Adjustments, period: str | None = None, cursor: str | None = None, limit: Limit = 50
) -> Page[AdjustmentOut]:
    """Adjustments of the users and teams the caller sees."""
    return await svc.list(period, cursor, limit)


@forecast_router.get("/adjustments/{adjustment_id}", response_model=AdjustmentOut)
async def get_adjustment(
    adjustment_id: uuid.UUID, svc: Adjustments, response: Response
) -> AdjustmentOut:
    """One adjustment."""
    out = await svc.get(adjustment_id)
    set_etag(response, out.version)
    return out


@forecast_router.delete("/adjustments/{adjustment_id}", status_code=204)
async def delete_adjustment(
    adjustment_id: uuid.UUID, svc: Adjustments, if_match: IfMatch = None
) -> Response:
    """Remove an override (the raw figure stands again)."""
    await svc.delete(adjustment_id, if_match)
    return Response(status_code=204)


reports_router = APIRouter(prefix="/v1/reports", tags=["reports"])


@reports_router.get("/funnel", response_model=FunnelOut)
async def funnel(
    svc: Reports, pipeline_id: uuid.UUID, from_: From = None, to: To = None
) -> FunnelOut:
    """Per stage of a pipeline: stays entered in the window, advanced, won, lost, conversions,
    median days in stage."""
    return await svc.funnel(pipeline_id, window(from_, to))


@reports_router.get("/sales-cycle", response_model=SalesCycleOut)
async def sales_cycle(
    svc: Reports, from_: From = None, to: To = None, pipeline_id: PipelineQ = None
) -> SalesCycleOut:
    """Median and mean days from creation to won, by owner (won in the window)."""
    return await svc.sales_cycle(window(from_, to), pipeline_id)


@reports_router.get("/win-rate", response_model=WinRateOut)
async def win_rate(
    svc: Reports,
    group_by: WinRateGroupBy = WinRateGroupBy.owner,
    from_: From = None,
    to: To = None,
    pipeline_id: PipelineQ = None,
) -> WinRateOut:
    """won / (won + lost) of the deals closed in the window, by owner, team or pipeline."""
    return await svc.win_rate(group_by, window(from_, to), pipeline_id)


@reports_router.get("/average-deal-size", response_model=DealSizeOut)
async def average_deal_size(
    svc: Reports, from_: From = None, to: To = None, pipeline_id: PipelineQ = None
) -> DealSizeOut:
    """Mean and median amount of the deals won in the window, by owner and currency."""
    return await svc.deal_size(window(from_, to), pipeline_id)
