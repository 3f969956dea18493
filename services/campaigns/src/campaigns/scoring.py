"""Lead scoring: several models per tenant, each a list of rules `{on, points, max_times}`,
a decay half-life and an MQL threshold.

`on` is an event type (email.opened, email.clicked, touchpoint.recorded,
touchpoint.<channel>, contact.created) or a field condition in the segment filter language
(e.g. {"field": "lifecycle_stage", "op": "eq", "value": "sql"}), scored when a contact change
makes it true (at most max_times, default 1 for conditions). A score is stored with the
time it was computed and decays continuously: s(t) = s0 * 0.5^(days / half_life). Crossing
the threshold upwards emits lead.qualified (the contacts service moves the contact to mql)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field, field_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns.common import (
    Actor,
    ActorDep,
    ResourceNotFound,
    Row,
    emit,
    list_value,
    next_version,
    now,
    one,
    rows,
)
from campaigns.filters import ACTIVE, compile_filter
from campaigns.resources import Table
from chassis.db import SessionDep
from chassis.http import Page, check_if_match, set_etag
from chassis.problems import Conflict, invalid
from crm.campaigns.v1 import campaigns_pb2 as pb

CHANNELS = ("web_form", "chat", "social", "site_visit", "email_reply", "phone")
EVENT_TYPES = frozenset(
    {"email.opened", "email.clicked", "touchpoint.recorded", "contact.created"}
    | {f"touchpoint.{c}" for c in CHANNELS}
)


class Rule(BaseModel):
    on: str | dict[str, Any] = Field(examples=["email.clicked"])
    points: int = Field(ge=-10_000, le=10_000)
    max_times: int | None = Field(default=None, ge=1, le=1_000_000)


class ModelIn(BaseModel):
    name: str = Field(
        min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$", examples=["default"]
    )
    rules: list[Rule] = Field(min_length=1, max_length=100)
    half_life_days: str = Field(default="0", examples=["30"])
    threshold: str = Field(examples=["50"])

    @field_validator("half_life_days", "threshold")
    @classmethod
    def _decimal(cls, v: str) -> str:
        try:
            d = Decimal(v)
        except Exception as e:
            raise ValueError("must be a decimal number as a string") from e
        if not d.is_finite() or d < 0 or d > 1_000_000:
            raise ValueError("must be between 0 and 1000000")
        return v


class ModelPatch(BaseModel):
    rules: list[Rule] | None = Field(default=None, min_length=1, max_length=100)
    half_life_days: str | None = None
    threshold: str | None = None


class ModelPublic(BaseModel):
    id: uuid.UUID
    name: str
    rules: list[Rule]
    half_life_days: str
    threshold: str
    created_at: datetime
    updated_at: datetime
    version: int


class ScorePublic(BaseModel):
    model_id: uuid.UUID
    model: str
    score: str
    threshold: str
    qualified: bool
    qualified_at: datetime | None
    scored_at: datetime | None


def _msg(change: str, row: Row) -> pb.ScoringModelChanged:
    return pb.ScoringModelChanged(
        change=change,
        model=pb.ScoringModel(
            id=str(row["id"]),
            name=row["name"],
            rules=list_value(row["rules"]),
            half_life_days=format(Decimal(row["half_life_days"]), "f"),
            threshold=format(Decimal(row["threshold"]), "f"),
            version=row["version"],
        ),
    )


TABLE = Table(
    "scoring_models",
    "scoring model",
    ("name", "rules", "half_life_days", "threshold"),
    _msg,
    json_columns=("rules",),
)


def validate_rules(rules: list[Rule]) -> None:
    for i, rule in enumerate(rules):
        if isinstance(rule.on, str):
            if rule.on not in EVENT_TYPES:
                raise invalid(
                    ["rules", i, "on"],
                    f"unknown event {rule.on!r}; one of {', '.join(sorted(EVENT_TYPES))}",
                )
        else:
            compile_filter(rule.on, now=now(), path=["rules", i, "on"])


def decayed(score: float, scored_at: datetime, at: datetime, half_life_days: float) -> float:
    if half_life_days <= 0:
        return score
    days = max(0.0, (at - scored_at).total_seconds() / 86400.0)
    return float(score * 0.5 ** (days / half_life_days))


def fmt(score: float) -> str:
    return str(Decimal(score).quantize(Decimal("0.01")))


async def _models(session: AsyncSession, tenant: str) -> list[Row]:
    return await rows(
        session,
        "SELECT * FROM scoring_models WHERE tenant_id = :t AND deleted_at IS NULL ORDER BY name",
        {"t": tenant},
    )


async def award(
    session: AsyncSession,
    actor: Actor,
    model: Row,
    rule_index: int,
    rule: dict[str, Any],
    contact_id: uuid.UUID,
    reason: str,
) -> None:
    max_times = rule.get("max_times")
    if max_times is None and not isinstance(rule["on"], str):
        max_times = 1
    hit = await one(
        session,
        "INSERT INTO score_rule_hits (tenant_id, model_id, contact_id, rule_index, times) VALUES "
        "(:t, :m, :c, :r, 1) ON CONFLICT (tenant_id, model_id, contact_id, rule_index) DO UPDATE "
        "SET "
        "times = score_rule_hits.times + 1 WHERE CAST(:max AS int) IS NULL OR "
        "score_rule_hits.times < CAST(:max AS int) "
        "RETURNING times",
        {"t": actor.tenant, "m": model["id"], "c": contact_id, "r": rule_index, "max": max_times},
    )
    if hit is None:
        return
    at = now()
    current = await one(
        session,
        "SELECT * FROM lead_scores WHERE tenant_id = :t AND model_id = :m AND contact_id = :c FOR "
        "UPDATE",
        {"t": actor.tenant, "m": model["id"], "c": contact_id},
    )
    hl = float(model["half_life_days"])
    before = decayed(current["score"], current["scored_at"], at, hl) if current else 0.0
    after = before + int(rule["points"])
    threshold = float(model["threshold"])
    crossed = before < threshold <= after
    await one(
        session,
        "INSERT INTO lead_scores (tenant_id, model_id, contact_id, score, scored_at, qualified_at) "
        "VALUES (:t, :m, :c, :s, :at, :q) ON CONFLICT (tenant_id, model_id, contact_id) DO UPDATE "
        "SET "
        "score = EXCLUDED.score, scored_at = EXCLUDED.scored_at, qualified_at = "
        "COALESCE(EXCLUDED.qualified_at, "
        "lead_scores.qualified_at) RETURNING 1 AS ok",
        {
            "t": actor.tenant,
            "m": model["id"],
            "c": contact_id,
            "s": after,
            "at": at,
            "q": at if crossed else None,
        },
    )
    version = await next_version(session, actor.tenant, "lead_score", contact_id)
    emit(
        session,
        actor,
        pb.LeadScoreChanged(
            contact_id=str(contact_id),
            model_id=str(model["id"]),
            model=model["name"],
            score=fmt(after),
            reason=reason,
        ),
        contact_id,
        version,
    )
    if crossed:
        version = await next_version(session, actor.tenant, "lead", contact_id)
        emit(
            session,
            actor,
            pb.LeadQualified(
                contact_id=str(contact_id),
                model_id=str(model["id"]),
                model=model["name"],
                score=fmt(after),
                threshold=format(Decimal(model["threshold"]), "f"),
            ),
            contact_id,
            version,
        )


async def apply_event(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, event_type: str
) -> None:
    actor = Actor(tenant, "system:lead-scoring", "crm/campaigns:scoring")
    for model in await _models(session, tenant):
        for i, rule in enumerate(model["rules"]):
            if rule["on"] == event_type:
                await award(session, actor, model, i, rule, contact_id, event_type)


async def apply_fields(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> None:
    """Score the field-condition rules a contact change made true (one query per model)."""
    actor = Actor(tenant, "system:lead-scoring", "crm/campaigns:scoring")
    at = now()
    for model in await _models(session, tenant):
        conditions = [(i, r) for i, r in enumerate(model["rules"]) if isinstance(r["on"], dict)]
        if not conditions:
            continue
        columns, params = [], {"tenant": tenant, "cid": contact_id}
        for n, (i, rule) in enumerate(conditions):
            compiled = compile_filter(rule["on"], now=at, path=["rules", i, "on"], prefix=f"r{n}_")
            params.update(compiled.params)
            columns.append(f"({compiled.sql}) AS r{n}")
        row = await one(
            session,
            f"SELECT {', '.join(columns)} FROM contacts c WHERE c.tenant_id = :tenant AND c.id = "
            f":cid AND {ACTIVE}",
            params,
        )
        if row is None:
            continue
        for n, (i, rule) in enumerate(conditions):
            if row[f"r{n}"]:
                await award(
                    session,
                    actor,
                    model,
                    i,
                    rule,
                    contact_id,
                    f"condition:{rule['on'].get('field', 'tree')}",
                )


async def merge(
    session: AsyncSession, tenant: str, survivor: uuid.UUID, losers: list[uuid.UUID]
) -> None:
    """Contacts merged: the survivor's score in a model is the sum of the decayed scores."""
    actor = Actor(tenant, "system:contact-merge", "crm/campaigns:scoring")
    at = now()
    for model in await _models(session, tenant):
        found = await rows(
            session,
            "DELETE FROM lead_scores WHERE tenant_id = :t AND model_id = :m "
            "AND contact_id = ANY(:ids) RETURNING *",
            {"t": tenant, "m": model["id"], "ids": [survivor, *losers]},
        )
        if not any(r["contact_id"] != survivor for r in found):
            for r in found:  # nothing to merge: put the survivor's row back as it was
                await one(
                    session,
                    "INSERT INTO lead_scores (tenant_id, model_id, contact_id, score, scored_at, "
                    "qualified_at) VALUES (:t, :m, :c, :s, :at, :q) RETURNING 1 AS ok",
                    {
                        "t": tenant,
                        "m": model["id"],
                        "c": survivor,
                        "s": r["score"],
                        "at": r["scored_at"],
                        "q": r["qualified_at"],
                    },
                )
            continue
        hl = float(model["half_life_days"])
        total = sum(decayed(r["score"], r["scored_at"], at, hl) for r in found)
        qualified = min((r["qualified_at"] for r in found if r["qualified_at"]), default=None)
        await one(
            session,
            "INSERT INTO lead_scores (tenant_id, model_id, contact_id, score, scored_at, "
            "qualified_at) VALUES (:t, :m, :c, :s, :at, :q) RETURNING 1 AS ok",
            {"t": tenant, "m": model["id"], "c": survivor, "s": total, "at": at, "q": qualified},
        )
        version = await next_version(session, tenant, "lead_score", survivor)
        emit(
            session,
            actor,
            pb.LeadScoreChanged(
                contact_id=str(survivor),
                model_id=str(model["id"]),
                model=model["name"],
                score=fmt(total),
                reason="contacts merged",
            ),
            survivor,
            version,
        )


async def scores_of(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> list[ScorePublic]:
    at = now()
    found = await rows(
        session,
        "SELECT m.id AS model_id, m.name, m.threshold, m.half_life_days, s.score, s.scored_at, "
        "s.qualified_at "
        "FROM scoring_models m LEFT JOIN lead_scores s ON s.tenant_id = m.tenant_id AND s.model_id "
        "= m.id "
        "AND s.contact_id = :c WHERE m.tenant_id = :t AND m.deleted_at IS NULL ORDER BY m.name",
        {"t": tenant, "c": contact_id},
    )
    out = []
    for r in found:
        value = (
            decayed(r["score"], r["scored_at"], at, float(r["half_life_days"]))
            if r["score"] is not None
            else 0.0
        )
        out.append(
            ScorePublic(
                model_id=r["model_id"],
                model=r["name"],
                score=fmt(value),
                threshold=format(Decimal(r["threshold"]), "f"),
                qualified=r["qualified_at"] is not None,
                qualified_at=r["qualified_at"],
                scored_at=r["scored_at"],
            )
        )
    return out


async def score_value(
    session: AsyncSession, tenant: str, model_ref: str, contact_id: uuid.UUID
) -> float:
    for s in await scores_of(session, tenant, contact_id):
        if s.model == model_ref or str(s.model_id) == model_ref:
            return float(s.score)
    return 0.0


# --- API --------------------------------------------------------------------------------------

router = APIRouter(tags=["scoring"])
IfMatch = Annotated[str | None, Header()]


def out(row: Row, response: Response | None = None) -> ModelPublic:
    if response is not None:
        set_etag(response, row["version"])
    return ModelPublic.model_validate(
        {
            **row,
            "half_life_days": format(Decimal(row["half_life_days"]), "f"),
            "threshold": format(Decimal(row["threshold"]), "f"),
        }
    )


@router.post("/v1/scoring-models", status_code=201, response_model=ModelPublic)
async def create_model(
    body: ModelIn, session: SessionDep, actor: ActorDep, response: Response
) -> ModelPublic:
    """Create a scoring model."""
    validate_rules(body.rules)
    taken = await one(
        session,
        "SELECT 1 AS x FROM scoring_models WHERE tenant_id = :t AND name = :n AND deleted_at IS "
        "NULL",
        {"t": actor.tenant, "n": body.name},
    )
    if taken:
        raise Conflict(f"a scoring model named {body.name!r} exists")
    at = now()
    row = {
        "tenant_id": actor.tenant,
        "id": uuid.uuid4(),
        "name": body.name,
        "rules": [r.model_dump() for r in body.rules],
        "half_life_days": Decimal(body.half_life_days),
        "threshold": Decimal(body.threshold),
        "created_at": at,
        "updated_at": at,
        "version": 1,
    }
    saved = await TABLE.save(session, actor, row, "created")
    response.headers["Location"] = f"/v1/scoring-models/{saved['id']}"
    return out(saved, response)


@router.get("/v1/scoring-models", response_model=Page[ModelPublic])
async def list_models(
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[ModelPublic]:
    """List scoring models."""
    found, nxt = await TABLE.page(session, actor.tenant, limit, cursor)
    return Page(items=[out(r) for r in found], next_cursor=nxt)


@router.get("/v1/scoring-models/{model_id}", response_model=ModelPublic)
async def get_model(
    model_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> ModelPublic:
    """Get a scoring model."""
    return out(await TABLE.get(session, actor.tenant, model_id), response)


@router.patch("/v1/scoring-models/{model_id}", response_model=ModelPublic)
async def patch_model(
    model_id: uuid.UUID,
    body: ModelPatch,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> ModelPublic:
    """Change rules, decay or threshold (If-Match required); existing scores are kept."""
    row = await TABLE.get(session, actor.tenant, model_id, lock=True)
    check_if_match(if_match, row["version"])
    patch: dict[str, Any] = {}
    if body.rules is not None:
        validate_rules(body.rules)
        patch["rules"] = [r.model_dump() for r in body.rules]
    for key in ("half_life_days", "threshold"):
        value = getattr(body, key)
        if value is not None:
            try:
                patch[key] = Decimal(ModelIn._decimal(value))
            except ValueError as e:
                raise invalid(key, str(e)) from e
    changed = [k for k, v in patch.items() if row[k] != v]
    if changed:
        row.update(patch, updated_at=now(), version=row["version"] + 1)
        row = await TABLE.save(session, actor, row, "updated", changed)
    return out(row, response)


@router.delete("/v1/scoring-models/{model_id}", status_code=204)
async def delete_model(
    model_id: uuid.UUID, session: SessionDep, actor: ActorDep, if_match: IfMatch = None
) -> None:
    """Delete a scoring model (If-Match required)."""
    row = await TABLE.get(session, actor.tenant, model_id, lock=True)
    check_if_match(if_match, row["version"])
    at = now()
    row.update(updated_at=at, deleted_at=at, version=row["version"] + 1)
    await TABLE.save(session, actor, row, "deleted")


@router.get("/v1/contacts/{contact_id}/scores", response_model=list[ScorePublic])
async def contact_scores(
    contact_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> list[ScorePublic]:
    """The contact's current (decayed) score in every model."""
    exists = await one(
        session,
        "SELECT 1 AS x FROM contacts WHERE tenant_id = :t AND id = :c AND erased_at IS NULL",
        {"t": actor.tenant, "c": contact_id},
    )
    if exists is None:
        raise ResourceNotFound("contact", contact_id)
    return await scores_of(session, actor.tenant, contact_id)
