"""`GET/PUT /v1/settings/health`: the tenant's health-score weights and churn threshold.

Admins change them (`If-Match` with the ETag read, 428/412 as everywhere); every other
tenant role reads them. A change restarts the tenant's full pass at once, so every
customer is rescored with the new weights within seconds after the commit (in batches, in
the background), and events follow from the rescoring like from any other change."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field
from sqlalchemy import text

from chassis.auth import Principal
from chassis.db import SessionDep
from chassis.http import check_if_match, set_etag
from chassis.problems import Forbidden, PreconditionFailed, invalid
from gateway.access import AdmittedDep
from gateway.readmodel.analytics import fullpass, metrics, scoring

router = APIRouter(prefix="/v1/settings/health", tags=["customers"])

READERS = frozenset({"admin", "sales_manager", "sales_rep", "marketer", "support_agent"})

Weight = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]


class HealthSettingsIn(BaseModel):
    """Signals left out of `weights` take their default weight."""

    weights: dict[str, Weight] = Field(
        default_factory=dict,
        examples=[{"purchase_recency": 30, "nps_category": 20, "loyalty_trend": 0}],
    )
    churn_threshold: Decimal = Field(
        default=metrics.DEFAULT_CHURN_THRESHOLD, ge=0, le=1, examples=["0.60"]
    )


class HealthSettingsOut(BaseModel):
    weights: dict[str, float]
    churn_threshold: str = Field(examples=["0.60"])
    bands: dict[str, int] = Field(
        description="Lowest score of each band; below yellow is red.",
        examples=[{"green": scoring.GREEN_AT, "yellow": scoring.YELLOW_AT}],
    )
    version: int = Field(description="0 while the tenant uses the defaults.")
    updated_at: datetime | None = None


def _out(s: metrics.HealthSettings, updated_at: datetime | None) -> dict[str, Any]:
    return {
        "weights": {name: s.weights[name] for name in scoring.HEALTH_SIGNALS},
        "churn_threshold": str(s.churn_threshold.quantize(Decimal("0.01"))),
        "bands": {"green": scoring.GREEN_AT, "yellow": scoring.YELLOW_AT},
        "version": s.version,
        "updated_at": updated_at,
    }


def _reader(principal: Principal) -> None:
    if not principal.roles & READERS:
        raise Forbidden("no role of this tenant may read its settings")


async def _current(session: SessionDep, tenant: str) -> tuple[metrics.HealthSettings, Any]:
    settings = await metrics.load_settings(session, tenant)
    row = (
        await session.execute(
            text("SELECT updated_at FROM health_settings WHERE tenant_id = :t"), {"t": tenant}
        )
    ).first()
    return settings, row[0] if row else None


@router.get("", response_model=HealthSettingsOut)
async def get_health_settings(
    response: Response, principal: AdmittedDep, session: SessionDep
) -> dict[str, Any]:
    """The tenant's health-score weights and churn-risk threshold (the defaults until set)."""
    _reader(principal)
    settings, updated_at = await _current(session, principal.tenant)
    set_etag(response, settings.version)
    return _out(settings, updated_at)


def _validated(body: HealthSettingsIn) -> dict[str, float]:
    unknown = sorted(set(body.weights) - set(scoring.HEALTH_SIGNALS))
    if unknown:
        raise invalid(f"weights.{unknown[0]}", "unknown signal")
    weights = {**scoring.DEFAULT_WEIGHTS, **{k: float(v) for k, v in body.weights.items()}}
    if sum(weights.values()) <= 0:
        raise invalid("weights", "at least one weight must be positive")
    return weights


@router.put("", response_model=HealthSettingsOut)
async def put_health_settings(
    body: HealthSettingsIn,
    response: Response,
    principal: AdmittedDep,
    session: SessionDep,
    if_match: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Replace the weights and threshold (admin; `If-Match`); every customer of the tenant is
    rescored right after."""
    if "admin" not in principal.roles:
        _reader(principal)
        raise Forbidden("only an admin may change the health settings")
    weights = _validated(body)
    current = await metrics.load_settings(session, principal.tenant)
    check_if_match(if_match, current.version)
    row = (
        await session.execute(
            text("""
            INSERT INTO health_settings AS h
                (tenant_id, weights, churn_threshold, version, updated_by)
            VALUES (:tenant, CAST(:weights AS jsonb), :threshold, 1, :sub)
            ON CONFLICT (tenant_id) DO UPDATE SET weights = EXCLUDED.weights,
                churn_threshold = EXCLUDED.churn_threshold, version = h.version + 1,
                updated_by = EXCLUDED.updated_by, updated_at = now()
            WHERE h.version = :expected
            RETURNING version, updated_at
        """),
            {
                "tenant": principal.tenant,
                "weights": json.dumps(weights),
                "threshold": body.churn_threshold,
                "sub": principal.sub,
                "expected": current.version,
            },
        )
    ).first()
    if row is None:  # another admin's write committed in between
        raise PreconditionFailed("the settings changed since you read them; fetch them again")
    await fullpass.schedule_now(session, principal.tenant)
    saved = metrics.HealthSettings(weights, body.churn_threshold, int(row[0]))
    set_etag(response, saved.version)
    return _out(saved, row[1])
