"""Email campaigns: a segment and a template, scheduled for a time (or now), cancelled, and
reported on. Sending itself is in `sending`."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import segments, templates
from campaigns.common import Actor, ActorDep, Row, execute, now, one, rows
from campaigns.resources import Table
from campaigns.sending import campaign_message
from chassis.db import SessionDep
from chassis.http import Page, check_if_match, decode_cursor, encode_cursor, set_etag
from chassis.problems import Conflict, invalid
from crm.campaigns.v1 import campaigns_pb2 as pb

ATTRIBUTION_DAYS = 30


def _event(change: str, row: Row) -> pb.CampaignChanged:
    return pb.CampaignChanged(change=change, campaign=campaign_message(row))


TABLE = Table(
    "campaigns",
    "campaign",
    (
        "name",
        "segment_id",
        "template_id",
        "send_at",
        "status",
        "recipients",
        "started_at",
        "finished_at",
    ),
    _event,
)


class CampaignIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Welcome VIPs"])
    segment_id: uuid.UUID
    template_id: uuid.UUID
    send_at: datetime | None = Field(default=None, description="null: send as soon as scheduled")


class CampaignPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    segment_id: uuid.UUID | None = None
    template_id: uuid.UUID | None = None
    send_at: datetime | None = None


class ScheduleIn(BaseModel):
    send_at: datetime | None = Field(
        default=None, description="overrides the campaign's send_at; null: now"
    )


class CampaignPublic(BaseModel):
    id: uuid.UUID
    name: str
    segment_id: uuid.UUID
    template_id: uuid.UUID
    send_at: datetime | None
    status: str
    recipients: int
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class DeliveryPublic(BaseModel):
    id: uuid.UUID
    contact_id: uuid.UUID
    email: str
    status: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    first_opened_at: datetime | None
    first_clicked_at: datetime | None
    opens: int
    clicks: int
    unsubscribed_at: datetime | None


class MoneyOut(BaseModel):
    amount: str
    currency: str


class DealsWon(BaseModel):
    count: int
    amounts: list[MoneyOut]


class Report(BaseModel):
    campaign_id: uuid.UUID
    status: str
    recipients: int
    pending: int
    sent: int
    failed: int
    bounced: int
    skipped: int
    unique_opens: int
    unique_clicks: int
    opens: int
    clicks: int
    unsubscribes: int
    open_rate: str
    click_rate: str
    click_to_open_rate: str
    unsubscribe_rate: str
    bounce_rate: str
    deals_won: DealsWon
    attribution_days: int = ATTRIBUTION_DAYS


async def _check_refs(
    session: AsyncSession, tenant: str, segment_id: uuid.UUID | None, template_id: uuid.UUID | None
) -> None:
    if segment_id is not None:
        try:
            await segments.get(session, tenant, segment_id)
        except Exception as e:
            raise invalid("segment_id", f"unknown segment {segment_id}") from e
    if template_id is not None:
        try:
            await templates.TABLE.get(session, tenant, template_id)
        except Exception as e:
            raise invalid("template_id", f"unknown email template {template_id}") from e


async def create(session: AsyncSession, actor: Actor, body: CampaignIn) -> Row:
    await _check_refs(session, actor.tenant, body.segment_id, body.template_id)
    at = now()
    row = {
        **body.model_dump(),
        "tenant_id": actor.tenant,
        "id": uuid.uuid4(),
        "status": "draft",
        "recipients": 0,
        "created_at": at,
        "updated_at": at,
        "version": 1,
    }
    return await TABLE.save(session, actor, row, "created")


async def update(
    session: AsyncSession, actor: Actor, cid: uuid.UUID, body: CampaignPatch, if_match: str | None
) -> Row:
    row = await TABLE.get(session, actor.tenant, cid, lock=True)
    check_if_match(if_match, row["version"])
    if row["status"] != "draft":
        raise Conflict(f"a {row['status']} campaign cannot be changed", status_now=row["status"])
    # send_at may be cleared (null: send when scheduled); the other fields may not.
    patch = {
        k: v
        for k, v in body.model_dump(exclude_unset=True).items()
        if v is not None or k == "send_at"
    }
    await _check_refs(session, actor.tenant, patch.get("segment_id"), patch.get("template_id"))
    changed = [k for k, v in patch.items() if row[k] != v]
    if not changed:
        return row
    row.update(patch, updated_at=now(), version=row["version"] + 1)
    return await TABLE.save(session, actor, row, "updated", changed)


async def schedule(session: AsyncSession, actor: Actor, cid: uuid.UUID, body: ScheduleIn) -> Row:
    row = await TABLE.get(session, actor.tenant, cid, lock=True)
    if row["status"] != "draft":
        raise Conflict(
            f"only a draft campaign can be scheduled; this one is {row['status']}",
            status_now=row["status"],
        )
    await _check_refs(session, actor.tenant, row["segment_id"], row["template_id"])
    at = now()
    row.update(
        status="scheduled",
        send_at=body.send_at or row["send_at"] or at,
        updated_at=at,
        version=row["version"] + 1,
    )
    return await TABLE.save(session, actor, row, "scheduled", ["status", "send_at"])


async def cancel(session: AsyncSession, actor: Actor, cid: uuid.UUID) -> Row:
    row = await TABLE.get(session, actor.tenant, cid, lock=True)
    if row["status"] not in ("draft", "scheduled", "sending"):
        raise Conflict(f"a {row['status']} campaign cannot be cancelled", status_now=row["status"])
    at = now()
    await execute(
        session,
        "UPDATE deliveries SET status = 'cancelled' WHERE tenant_id = :t AND campaign_id = :c AND "
        "status = 'pending'",
        {"t": actor.tenant, "c": cid},
    )
    row.update(status="cancelled", finished_at=at, updated_at=at, version=row["version"] + 1)
    return await TABLE.save(session, actor, row, "cancelled", ["status"])


def _rate(part: int, whole: int) -> str:
    if whole <= 0:
        return "0.0000"
    return str((Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN))


async def report(session: AsyncSession, tenant: str, cid: uuid.UUID) -> Report:
    campaign = await TABLE.get(session, tenant, cid)
    stats = await one(
        session,
        "SELECT count(*) AS recipients, "
        "count(*) FILTER (WHERE status = 'pending') AS pending, "
        "count(*) FILTER (WHERE status = 'sent') AS sent, "
        "count(*) FILTER (WHERE status IN ('failed', 'bounced')) AS failed, "
        "count(*) FILTER (WHERE status = 'bounced') AS bounced, "
        "count(*) FILTER (WHERE status IN ('skipped', 'cancelled')) AS skipped, "
        "count(first_opened_at) AS unique_opens, count(first_clicked_at) AS unique_clicks, "
        "COALESCE(sum(opens), 0) AS opens, COALESCE(sum(clicks), 0) AS clicks, "
        "count(unsubscribed_at) AS unsubscribes FROM deliveries WHERE tenant_id = :t AND "
        "campaign_id = :c",
        {"t": tenant, "c": cid},
    )
    assert stats is not None
    won = await rows(
        session,
        "SELECT w.currency, count(*) AS n, sum(w.amount) AS amount FROM deal_outcomes w "
        "WHERE w.tenant_id = :t AND w.status = 'won' AND EXISTS (SELECT 1 FROM deliveries d "
        "WHERE d.tenant_id = w.tenant_id AND d.campaign_id = :c AND d.contact_id = w.contact_id "
        "AND d.sent_at IS NOT NULL AND w.won_at >= d.sent_at "
        "AND w.won_at < d.sent_at + make_interval(days => :days)) GROUP BY w.currency ORDER BY "
        "w.currency",
        {"t": tenant, "c": cid, "days": ATTRIBUTION_DAYS},
    )
    s = {k: int(v) for k, v in stats.items()}
    return Report(
        campaign_id=cid,
        status=campaign["status"],
        **s,
        open_rate=_rate(s["unique_opens"], s["sent"]),
        click_rate=_rate(s["unique_clicks"], s["sent"]),
        click_to_open_rate=_rate(s["unique_clicks"], s["unique_opens"]),
        unsubscribe_rate=_rate(s["unsubscribes"], s["sent"]),
        bounce_rate=_rate(s["bounced"], s["recipients"]),
        deals_won=DealsWon(
            count=sum(int(r["n"]) for r in won),
            amounts=[
                MoneyOut(amount=format(Decimal(r["amount"]), "f"), currency=r["currency"])
                for r in won
            ],
        ),
    )


router = APIRouter(prefix="/v1/campaigns", tags=["campaigns"])
IfMatch = Annotated[str | None, Header()]


def out(row: Row, response: Response | None = None) -> CampaignPublic:
    if response is not None:
        set_etag(response, row["version"])
    return CampaignPublic.model_validate(row)


@router.post("", status_code=201, response_model=CampaignPublic)
async def create_campaign(
    body: CampaignIn, session: SessionDep, actor: ActorDep, response: Response
) -> CampaignPublic:
    """Create a draft campaign for a segment and a template."""
    row = await create(session, actor, body)
    response.headers["Location"] = f"/v1/campaigns/{row['id']}"
    return out(row, response)


@router.get("", response_model=Page[CampaignPublic])
async def list_campaigns(
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[CampaignPublic]:
    """List campaigns."""
    found, nxt = await TABLE.page(session, actor.tenant, limit, cursor)
    return Page(items=[out(r) for r in found], next_cursor=nxt)


@router.get("/{campaign_id}", response_model=CampaignPublic)
async def get_campaign(
    campaign_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> CampaignPublic:
    """Get a campaign."""
    return out(await TABLE.get(session, actor.tenant, campaign_id), response)


@router.patch("/{campaign_id}", response_model=CampaignPublic)
async def patch_campaign(
    campaign_id: uuid.UUID,
    body: CampaignPatch,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> CampaignPublic:
    """Change a draft campaign (If-Match required)."""
    return out(await update(session, actor, campaign_id, body, if_match), response)


@router.delete("/{campaign_id}", status_code=204)
async def delete_campaign(
    campaign_id: uuid.UUID, session: SessionDep, actor: ActorDep, if_match: IfMatch = None
) -> None:
    """Delete a campaign that is not scheduled or sending (If-Match required)."""
    row = await TABLE.get(session, actor.tenant, campaign_id, lock=True)
    check_if_match(if_match, row["version"])
    if row["status"] in ("scheduled", "sending"):
        raise Conflict("cancel the campaign first", status_now=row["status"])
    at = now()
    row.update(updated_at=at, deleted_at=at, version=row["version"] + 1)
    await TABLE.save(session, actor, row, "deleted")


@router.post("/{campaign_id}/schedule", response_model=CampaignPublic)
async def schedule_campaign(
    campaign_id: uuid.UUID,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    body: ScheduleIn | None = None,
) -> CampaignPublic:
    """Schedule a draft campaign for its send_at (null: now)."""
    return out(await schedule(session, actor, campaign_id, body or ScheduleIn()), response)


@router.post("/{campaign_id}/cancel", response_model=CampaignPublic)
async def cancel_campaign(
    campaign_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> CampaignPublic:
    """Cancel a draft, scheduled or sending campaign; emails not yet sent are not sent."""
    return out(await cancel(session, actor, campaign_id), response)


@router.get("/{campaign_id}/report", response_model=Report)
async def campaign_report(campaign_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> Report:
    """Recipients, sent, failed, unique opens and clicks, unsubscribes, rates, and deals won
    by recipients within 30 days after their email was sent."""
    return await report(session, actor.tenant, campaign_id)


@router.get("/{campaign_id}/deliveries", response_model=Page[DeliveryPublic])
async def list_deliveries(
    campaign_id: uuid.UUID,
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> Page[DeliveryPublic]:
    """One row per recipient: status, attempts and engagement (keyset by delivery id)."""
    await TABLE.get(session, actor.tenant, campaign_id)
    decoded = decode_cursor(cursor)
    after = None
    if decoded is not None:
        try:
            after = uuid.UUID(str(decoded.get("id")))
        except ValueError as e:
            raise invalid("cursor", "not a cursor returned by this API") from e
    found = await rows(
        session,
        "SELECT * FROM deliveries WHERE tenant_id = :t AND campaign_id = :c "
        "AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :n",
        {"t": actor.tenant, "c": campaign_id, "after": after, "n": limit + 1},
    )
    nxt = encode_cursor({"id": str(found[limit - 1]["id"])}) if len(found) > limit else None
    return Page(items=[DeliveryPublic.model_validate(r) for r in found[:limit]], next_cursor=nxt)
