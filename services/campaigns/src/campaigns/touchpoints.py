"""Touchpoints: interactions on any channel, with a known contact or only an email.

An email no contact has yet becomes a `lead.captured` event, once per email and tenant, for
the contacts service to create the lead; the touchpoint is linked (version 2 of its
`touchpoint.recorded`) when the replica sees a contact with that email. A linked touchpoint
feeds lead scoring, sequence triggers, and an `email_reply` ends the contact's sequences."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, model_validator
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import reactions
from campaigns.common import Actor, ActorDep, Row, emit, next_version, now, one, rows, struct
from campaigns.filters import ACTIVE
from chassis.db import SessionDep
from chassis.http import Page, decode_cursor, encode_cursor
from chassis.problems import invalid
from crm.campaigns.v1 import campaigns_pb2 as pb

Channel = Literal["web_form", "chat", "social", "site_visit", "email_reply", "phone"]


class TouchpointIn(BaseModel):
    channel: Channel
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    contact_id: uuid.UUID | None = None
    occurred_at: datetime | None = None
    source: str = Field(default="", max_length=500, examples=["pricing-page-form"])
    data: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _who(self) -> TouchpointIn:
        if self.email is None and self.contact_id is None:
            raise ValueError("give an email or a contact_id")
        if self.occurred_at is not None and self.occurred_at.tzinfo is None:
            raise ValueError("occurred_at needs a time zone")
        if len(json.dumps(self.data)) > 64_000:
            raise ValueError("data is larger than 64 kB")
        return self


class TouchpointPublic(BaseModel):
    id: uuid.UUID
    channel: str
    email: str | None
    contact_id: uuid.UUID | None
    occurred_at: datetime
    source: str
    data: dict[str, Any]
    created_at: datetime
    version: int


def message(row: Row) -> pb.Touchpoint:
    t = pb.Touchpoint(
        id=str(row["id"]),
        channel=row["channel"],
        contact_id=str(row["contact_id"] or ""),
        email=row["email"] or "",
        source=row["source"],
        data=struct(row["data"]),
        version=row["version"],
    )
    t.occurred_at.FromDatetime(row["occurred_at"])
    return t


async def _after_link(session: AsyncSession, row: Row) -> None:
    tenant, contact = row["tenant_id"], row["contact_id"]
    await reactions.touchpoint_linked(session, tenant, contact, row["channel"])


async def record(session: AsyncSession, actor: Actor, body: TouchpointIn) -> Row:
    email = body.email.strip().lower() if body.email else None
    contact_id = body.contact_id
    if contact_id is not None:
        found = await one(
            session,
            "SELECT c.id, c.email FROM contacts c WHERE c.tenant_id = :t AND c.id = :i AND "
            f"{ACTIVE}",
            {"t": actor.tenant, "i": contact_id},
        )
        if found is None:
            raise invalid("contact_id", f"unknown contact {contact_id}")
        email = email or found["email"]
    elif email is not None:
        found = await one(
            session,
            f"SELECT c.id FROM contacts c WHERE c.tenant_id = :t AND c.email = :e AND {ACTIVE} "
            "ORDER BY c.created_at, c.id LIMIT 1",
            {"t": actor.tenant, "e": email},
        )
        contact_id = found["id"] if found else None
    at = now()
    row = await one(
        session,
        "INSERT INTO touchpoints (tenant_id, id, channel, email, contact_id, occurred_at, source, "
        "data, "
        "created_at, version) VALUES (:t, :i, :ch, :e, :c, :o, :s, CAST(:d AS jsonb), :now, 1) "
        "RETURNING *",
        {
            "t": actor.tenant,
            "i": uuid.uuid4(),
            "ch": body.channel,
            "e": email,
            "c": contact_id,
            "o": body.occurred_at or at,
            "s": body.source,
            "d": json.dumps(body.data),
            "now": at,
        },
    )
    assert row is not None
    emit(session, actor, pb.TouchpointRecorded(touchpoint=message(row)), row["id"], 1)
    if contact_id is not None:
        await _after_link(session, row)
    elif email is not None:
        captured = await one(
            session,
            "INSERT INTO lead_captures (tenant_id, email, touchpoint_id, at) VALUES (:t, :e, :tp, "
            ":now) "
            "ON CONFLICT (tenant_id, email) DO NOTHING RETURNING touchpoint_id",
            {"t": actor.tenant, "e": email, "tp": row["id"], "now": at},
        )
        if captured is not None:
            version = await next_version(session, actor.tenant, "lead", row["id"])
            emit(
                session,
                actor,
                pb.LeadCaptured(
                    email=email,
                    channel=body.channel,
                    source=body.source,
                    touchpoint_id=str(row["id"]),
                    first_name=str(body.data.get("first_name") or "")[:200],
                    last_name=str(body.data.get("last_name") or "")[:200],
                ),
                row["id"],
                version,
            )
    return row


async def link_by_email(
    session: AsyncSession, tenant: str, contact_id: uuid.UUID, email: str | None
) -> None:
    """Link the touchpoints waiting for this email to the contact now in the replica."""
    if not email:
        return
    linked = await rows(
        session,
        "UPDATE touchpoints SET contact_id = :c, version = version + 1 WHERE tenant_id = :t "
        "AND contact_id IS NULL AND email = :e RETURNING *",
        {"t": tenant, "c": contact_id, "e": email},
    )
    actor = Actor(tenant, "system:touchpoints", "crm/campaigns:touchpoints")
    for row in linked:
        emit(
            session,
            actor,
            pb.TouchpointRecorded(touchpoint=message(row)),
            row["id"],
            row["version"],
            ["contact_id"],
        )
        await _after_link(session, row)


async def repoint(
    session: AsyncSession, tenant: str, survivor: uuid.UUID, losers: list[uuid.UUID]
) -> None:
    moved = await rows(
        session,
        "UPDATE touchpoints SET contact_id = :s, version = version + 1 WHERE tenant_id = :t AND "
        "contact_id = ANY(:l) RETURNING *",
        {"t": tenant, "s": survivor, "l": losers},
    )
    actor = Actor(tenant, "system:touchpoints", "crm/campaigns:touchpoints")
    for row in moved:
        emit(
            session,
            actor,
            pb.TouchpointRecorded(touchpoint=message(row)),
            row["id"],
            row["version"],
            ["contact_id"],
        )


async def erase(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> None:
    """Right to erasure: the touchpoints keep channel and time, lose email, source and data."""
    await rows(
        session,
        "UPDATE touchpoints SET email = NULL, data = '{}', source = '' WHERE tenant_id = :t AND "
        "contact_id = :c RETURNING id",
        {"t": tenant, "c": contact_id},
    )


router = APIRouter(prefix="/v1/touchpoints", tags=["touchpoints"])


@router.post("", status_code=201, response_model=TouchpointPublic)
async def create_touchpoint(
    body: TouchpointIn, session: SessionDep, actor: ActorDep, response: Response
) -> TouchpointPublic:
    """Record a touchpoint; an unknown email leads to a new lead contact (once per email)."""
    row = await record(session, actor, body)
    response.headers["Location"] = f"/v1/touchpoints/{row['id']}"
    return TouchpointPublic.model_validate(row)


@router.get("", response_model=Page[TouchpointPublic])
async def list_touchpoints(
    session: SessionDep,
    actor: ActorDep,
    contact_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[TouchpointPublic]:
    """Touchpoints, newest first (keyset on occurred_at, id), optionally of one contact."""
    decoded = decode_cursor(cursor) or {}
    try:
        before_at = datetime.fromisoformat(decoded["at"]) if decoded else None
        before_id = uuid.UUID(decoded["id"]) if decoded else None
    except (KeyError, ValueError) as e:
        raise invalid("cursor", "not a cursor returned by this API") from e
    found = await rows(
        session,
        "SELECT * FROM touchpoints WHERE tenant_id = :t AND (CAST(:c AS uuid) IS NULL OR "
        "contact_id = CAST(:c AS uuid)) "
        "AND (CAST(:bat AS timestamptz) IS NULL OR (occurred_at, id) < (CAST(:bat AS timestamptz), "
        "CAST(:bid AS uuid))) "
        "ORDER BY occurred_at DESC, id DESC LIMIT :n",
        {"t": actor.tenant, "c": contact_id, "bat": before_at, "bid": before_id, "n": limit + 1},
    )
    nxt = None
    if len(found) > limit:
        last = found[limit - 1]
        nxt = encode_cursor({"at": last["occurred_at"].isoformat(), "id": str(last["id"])})
    return Page(items=[TouchpointPublic.model_validate(r) for r in found[:limit]], next_cursor=nxt)
