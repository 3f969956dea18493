"""`/v1/webhooks`: partner webhook subscriptions of the caller's tenant (admins only), their
deliveries, secret rotation and replay from the event log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal
from chassis.db import SessionDep
from chassis.http import check_if_match, decode_cursor, encode_cursor, set_etag
from chassis.problems import Forbidden, NotFound, invalid
from gateway.access import AdmittedDep
from gateway.feed import patterns
from gateway.settings import GatewaySettings
from gateway.webhooks import signing, ssrf
from gateway.webhooks.fanout import wake_after_commit

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

IfMatch = Annotated[str | None, Header()]

_COLUMNS = (
    "id, url, event_types, description, active, version, created_by, created_at, updated_at, "
    "disabled_at, disabled_reason, previous_secret_expires_at"
)


async def admin(principal: AdmittedDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("webhook subscriptions are managed by admins")
    return principal


AdminDep = Annotated[Principal, Depends(admin)]


async def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]


class WebhookNotFound(NotFound):
    def __init__(self, webhook_id: object) -> None:
        super().__init__(f"webhook {webhook_id} not found")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, examples=["https://partner.example/crm-events"])
    event_types: list[str] = Field(
        min_length=1,
        max_length=patterns.MAX_PATTERNS,
        description="ce-type patterns; `*` matches anything.",
        examples=[["crm.pipeline.deal.*", "crm.contacts.contact.created.v1"]],
    )
    description: str = Field(default="", max_length=1000)
    active: bool = True


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2000)
    event_types: list[str] | None = Field(
        default=None, min_length=1, max_length=patterns.MAX_PATTERNS
    )
    description: str | None = Field(default=None, max_length=1000)
    active: bool | None = Field(
        default=None, description="true re-enables a subscription disabled after failures."
    )


class Webhook(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    active: bool
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    previous_secret_expires_at: datetime | None = Field(
        default=None, description="Until then the previous secret signs too (rotation)."
    )


class WebhookCreated(Webhook):
    secret: str = Field(description="Shown once: keep it to verify webhook-signature.")


class WebhookPage(BaseModel):
    items: list[Webhook]
    next_cursor: str | None = None


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_seconds: int | None = Field(
        default=None,
        ge=0,
        le=7 * 86400,
        description="How long the previous secret keeps signing (default: the setting).",
    )


class RotatedSecret(BaseModel):
    id: uuid.UUID
    secret: str = Field(description="The new secret, shown once.")
    previous_secret_expires_at: datetime | None


class Delivery(BaseModel):
    id: str
    event_id: uuid.UUID
    type: str
    aggregate: str = Field(description="`<context>.<aggregate>:<id>`")
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    replay: bool
    created_at: datetime
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    response_code: int | None = None
    latency_ms: int | None = None
    response_excerpt: str | None = Field(default=None, description="At most 1 KB.")
    error: str | None = None


class DeliveryPage(BaseModel):
    items: list[Delivery]
    next_cursor: str | None = None


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: AwareDatetime = Field(alias="from", description="Event time, inclusive.")
    to: AwareDatetime = Field(description="Event time, exclusive.")
    event_types: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=patterns.MAX_PATTERNS,
        description="Only these patterns (within the subscription's).",
    )


class ReplayOut(BaseModel):
    scheduled: int = Field(description="Deliveries queued.")


async def _checked_url(url: str, settings: GatewaySettings) -> str:
    try:
        await ssrf.check(url.strip(), settings.webhooks_private_targets_allowed)
    except ssrf.UnsafeTarget as e:
        raise invalid("url", str(e)) from None
    return url.strip()


async def _load(session: AsyncSession, principal: Principal, webhook_id: uuid.UUID) -> Any:
    row = (
        await session.execute(
            text(f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE tenant_id = :t AND id = :i"),
            {"t": principal.tenant, "i": webhook_id},
        )
    ).first()
    if row is None:
        raise WebhookNotFound(webhook_id)
    return row


def _out(row: Any) -> Webhook:
    return Webhook.model_validate(dict(row._mapping))


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(
    body: WebhookIn,
    response: Response,
    principal: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
) -> WebhookCreated:
    """Subscribe a URL to event types. The signing secret is in this response only."""
    types = patterns.check(body.event_types, "event_types")
    url = await _checked_url(body.url, settings)
    secret = signing.new_secret()
    row = (
        await session.execute(
            text(
                "INSERT INTO webhook_subscriptions (id, tenant_id, url, event_types, type_likes, "
                "description, active, secret, created_by) "
                "VALUES (:i, :t, :u, :types, :likes, :d, :a, :s, :by) "
                f"RETURNING {_COLUMNS}"
            ),
            {
                "i": uuid.uuid4(),
                "t": principal.tenant,
                "u": url,
                "types": types,
                "likes": [patterns.like(p) for p in types],
                "d": body.description,
                "a": body.active,
                "s": secret,
                "by": principal.sub,
            },
        )
    ).one()
    set_etag(response, row.version)
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return WebhookCreated(**_out(row).model_dump(), secret=secret)


@router.get("", response_model=WebhookPage)
async def list_webhooks(
    principal: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> WebhookPage:
    """The tenant's subscriptions, oldest first."""
    after = decode_cursor(cursor)
    params: dict[str, Any] = {"t": principal.tenant, "n": limit + 1}
    where = "tenant_id = :t"
    if after is not None:
        try:
            params["ca"] = datetime.fromisoformat(str(after["c"]))
            params["ci"] = uuid.UUID(str(after["i"]))
        except (KeyError, ValueError):
            raise invalid("cursor", "not a cursor returned by this API") from None
        where += " AND (created_at, id) > (:ca, :ci)"
    rows = (
        await session.execute(
            text(
                f"SELECT {_COLUMNS} FROM webhook_subscriptions WHERE {where} "
                "ORDER BY created_at, id LIMIT :n"
            ),
            params,
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        next_cursor = encode_cursor({"c": rows[-1].created_at.isoformat(), "i": str(rows[-1].id)})
    return WebhookPage(items=[_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=Webhook)
async def get_webhook(
    webhook_id: uuid.UUID, response: Response, principal: AdminDep, session: SessionDep
) -> Webhook:
    row = await _load(session, principal, webhook_id)
    set_etag(response, row.version)
    return _out(row)


@router.patch("/{webhook_id}", response_model=Webhook)
async def update_webhook(
    webhook_id: uuid.UUID,
    body: WebhookPatch,
    response: Response,
    principal: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    if_match: IfMatch = None,
) -> Webhook:
    """Change the fields sent; needs If-Match. `active: true` re-enables a disabled one."""
    current = await _load(session, principal, webhook_id)
    check_if_match(if_match, current.version)
    sets = ["version = version + 1", "updated_at = now()"]
    params: dict[str, Any] = {"t": principal.tenant, "i": webhook_id}
    if body.url is not None:
        params["u"] = await _checked_url(body.url, settings)
        sets.append("url = :u")
    if body.event_types is not None:
        types = patterns.check(body.event_types, "event_types")
        params["types"] = types
        params["likes"] = [patterns.like(p) for p in types]
        sets += ["event_types = :types", "type_likes = :likes"]
    if body.description is not None:
        params["d"] = body.description
        sets.append("description = :d")
    if body.active is not None:
        params["a"] = body.active
        sets.append("active = :a")
        if body.active:
            sets += ["disabled_at = NULL", "disabled_reason = NULL"]
    row = (
        await session.execute(
            text(
                f"UPDATE webhook_subscriptions SET {', '.join(sets)} "
                f"WHERE tenant_id = :t AND id = :i RETURNING {_COLUMNS}"
            ),
            params,
        )
    ).one()
    if body.active:
        wake_after_commit(session)
    set_etag(response, row.version)
    return _out(row)


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: uuid.UUID, principal: AdminDep, session: SessionDep, if_match: IfMatch = None
) -> Response:
    """Delete the subscription with its deliveries; needs If-Match."""
    current = await _load(session, principal, webhook_id)
    check_if_match(if_match, current.version)
    await session.execute(
        text("DELETE FROM webhook_subscriptions WHERE tenant_id = :t AND id = :i"),
        {"t": principal.tenant, "i": webhook_id},
    )
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=RotatedSecret)
async def rotate_secret(
    webhook_id: uuid.UUID,
    response: Response,
    principal: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
    body: RotateIn | None = None,
) -> RotatedSecret:
    """A new secret (shown once); the previous one keeps signing during the overlap, so both
    signatures are in `webhook-signature` until then."""
    await _load(session, principal, webhook_id)
    overlap = (
        body.overlap_seconds
        if body is not None and body.overlap_seconds is not None
        else settings.webhooks_rotation_overlap_seconds
    )
    expires = datetime.now(UTC) + timedelta(seconds=overlap) if overlap > 0 else None
    secret = signing.new_secret()
    row = (
        await session.execute(
            text(
                "UPDATE webhook_subscriptions SET previous_secret = "
                "CASE WHEN CAST(:e AS timestamptz) IS NULL THEN NULL ELSE secret END, "
                "previous_secret_expires_at = :e, secret = :s, version = version + 1, "
                "updated_at = now() WHERE tenant_id = :t AND id = :i RETURNING version"
            ),
            {"t": principal.tenant, "i": webhook_id, "s": secret, "e": expires},
        )
    ).one()
    set_etag(response, row.version)
    return RotatedSecret(id=webhook_id, secret=secret, previous_secret_expires_at=expires)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    webhook_id: uuid.UUID,
    principal: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
) -> DeliveryPage:
    """The subscription's deliveries, newest first."""
    await _load(session, principal, webhook_id)
    after = decode_cursor(cursor)
    params: dict[str, Any] = {"s": webhook_id, "n": limit + 1}
    where = "subscription_id = :s"
    if after is not None:
        try:
            params["after"] = int(after["i"])
        except (KeyError, TypeError, ValueError):
            raise invalid("cursor", "not a cursor returned by this API") from None
        where += " AND id < :after"
    if status is not None:
        params["st"] = status
        where += " AND status = :st"
    rows = (
        await session.execute(
            text(
                "SELECT id, event_id, ce_type, aggregate_key, status, attempts, replay, "
                "created_at, last_attempt_at, next_attempt_at, delivered_at, response_code, "
                "latency_ms, response_excerpt, error FROM webhook_deliveries "
                f"WHERE {where} ORDER BY id DESC LIMIT :n"
            ),
            params,
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        Delivery(
            id=str(r.id),
            event_id=r.event_id,
            type=r.ce_type,
            aggregate=r.aggregate_key,
            status=r.status,
            attempts=r.attempts,
            replay=r.replay,
            created_at=r.created_at,
            last_attempt_at=r.last_attempt_at,
            next_attempt_at=r.next_attempt_at if r.status == "pending" else None,
            delivered_at=r.delivered_at,
            response_code=r.response_code,
            latency_ms=r.latency_ms,
            response_excerpt=r.response_excerpt,
            error=r.error,
        )
        for r in rows
    ]
    next_cursor = encode_cursor({"i": rows[-1].id}) if more else None
    return DeliveryPage(items=items, next_cursor=next_cursor)


_REPLAY_WHERE = (
    "e.tenant_id = :t AND e.time >= :f AND e.time < :to "
    "AND e.ce_type LIKE ANY (CAST(:sub_likes AS text[])) "
    "AND e.ce_type LIKE ANY (CAST(:likes AS text[]))"
)

_REPLAY = f"""
WITH picked AS (
    SELECT e.txid, e.position, e.tenant_id, e.event_id, e.ce_type, e.aggregate, e.aggregate_id
    FROM event_log e WHERE {_REPLAY_WHERE}
), fanned AS (
    INSERT INTO webhook_deliveries
        (subscription_id, tenant_id, event_position, event_id, ce_type, aggregate_key, replay)
    SELECT CAST(:s AS uuid), p.tenant_id, p.position, p.event_id, p.ce_type,
           p.aggregate || ':' || p.aggregate_id, true
    FROM picked p ORDER BY p.txid, p.position
    RETURNING subscription_id, aggregate_key
)
INSERT INTO webhook_queues AS q (subscription_id, aggregate_key, next_attempt_at)
SELECT DISTINCT subscription_id, aggregate_key, now() FROM fanned
ORDER BY subscription_id, aggregate_key
ON CONFLICT (subscription_id, aggregate_key) DO UPDATE SET bumps = q.bumps + 1
"""


@router.post("/{webhook_id}/replay", status_code=202, response_model=ReplayOut)
async def replay(
    webhook_id: uuid.UUID,
    body: ReplayIn,
    principal: AdminDep,
    session: SessionDep,
    settings: SettingsDep,
) -> ReplayOut:
    """Send again the events of [from, to) that the subscription matches (optionally only
    `event_types`), from the gateway's event log (kept `event_log_retention_days`), in
    their original order per aggregate, after what is already pending."""
    if body.from_ >= body.to:
        raise invalid("to", "must be after from")
    wanted = patterns.check(body.event_types, "event_types") if body.event_types else ["*"]
    await _load(session, principal, webhook_id)
    likes_row = (
        await session.execute(
            text("SELECT type_likes FROM webhook_subscriptions WHERE id = :i"),
            {"i": webhook_id},
        )
    ).one()
    params = {
        "t": principal.tenant,
        "s": webhook_id,
        "f": body.from_,
        "to": body.to,
        "sub_likes": list(likes_row.type_likes),
        "likes": [patterns.like(p) for p in wanted],
    }
    count = int(
        (
            await session.execute(
                text(f"SELECT count(*) FROM event_log e WHERE {_REPLAY_WHERE}"), params
            )
        ).scalar_one()
    )
    if count > settings.webhooks_replay_max:
        raise invalid(
            "to", f"{count} events in the range; replay at most {settings.webhooks_replay_max}"
        )
    if count:
        await session.execute(text(_REPLAY), params)
        wake_after_commit(session)
    return ReplayOut(scheduled=count)
