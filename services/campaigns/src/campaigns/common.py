"""Shared plumbing: SQL helpers (rows as dicts), the caller, event emission with EventMeta,
counters for event-only aggregates, protobuf conversions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns.settings import CampaignsSettings
from chassis import outbox
from chassis.auth import Principal, PrincipalDep, require_roles
from chassis.events import OutgoingEvent
from chassis.problems import NotFound
from crm.common.v1.common_pb2 import EventMeta
from crm.registry import ce_type_for

Row = dict[str, Any]
SOURCE = "crm/campaigns"


def now() -> datetime:
    return datetime.now(UTC)


async def rows(
    session: AsyncSession, sql: str, params: Mapping[str, Any] | None = None
) -> list[Row]:
    result = await session.execute(text(sql), dict(params or {}))
    return [dict(r) for r in result.mappings().all()]


async def one(
    session: AsyncSession, sql: str, params: Mapping[str, Any] | None = None
) -> Row | None:
    found = await rows(session, sql, params)
    return found[0] if found else None


async def execute(session: AsyncSession, sql: str, params: Mapping[str, Any] | None = None) -> int:
    result = await session.execute(text(sql), dict(params or {}))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Actor:
    """Who a write is attributed to in EventMeta."""

    tenant: str
    sub: str
    origin: str


class ResourceNotFound(NotFound):
    def __init__(self, kind: str, rid: object) -> None:
        super().__init__(f"{kind} {rid} not found")


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    t = Timestamp()
    t.FromDatetime(value.astimezone(UTC))
    return t


def from_ts(value: Timestamp) -> datetime | None:
    if value.seconds == 0 and value.nanos == 0:
        return None
    return value.ToDatetime(tzinfo=UTC)


def struct(value: Mapping[str, Any] | None) -> Struct:
    s = Struct()
    if value:
        s.update(dict(value))
    return s


def list_value(value: list[Any] | None) -> ListValue:
    lv = ListValue()
    if value:
        lv.extend(value)
    return lv


def struct_to_dict(value: Struct) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(value)
    return out


def emit(
    session: AsyncSession,
    actor: Actor,
    message: Message,
    aggregate_id: uuid.UUID | str,
    version: int,
    changed: list[str] | None = None,
) -> None:
    """Fill `message.meta` and add the event to the outbox of this unit of work."""
    meta: EventMeta = message.meta  # type: ignore[attr-defined]
    meta.CopyFrom(
        EventMeta(
            tenant_id=actor.tenant,
            aggregate_id=str(aggregate_id),
            version=version,
            actor=actor.sub,
            origin=actor.origin,
            occurred_at=ts(now()),
            changed_fields=changed or [],
        )
    )
    outbox.add(
        session,
        OutgoingEvent(
            message=message,
            ce_type=ce_type_for(message),
            tenant=actor.tenant,
            aggregate_id=str(aggregate_id),
            version=version,
            source=SOURCE,
        ),
    )


async def next_version(
    session: AsyncSession, tenant: str, aggregate: str, aggregate_id: uuid.UUID
) -> int:
    """Version counter of an aggregate that only exists as events (e.g. a contact's consent
    events published here): one upsert, serialized per aggregate by the row lock."""
    row = await one(
        session,
        "INSERT INTO aggregate_versions (tenant_id, aggregate, id, version) "
        "VALUES (:t, :a, :i, 1) ON CONFLICT (tenant_id, aggregate, id) "
        "DO UPDATE SET version = aggregate_versions.version + 1 RETURNING version",
        {"t": tenant, "a": aggregate, "i": aggregate_id},
    )
    assert row is not None
    return int(row["version"])


MarketerDep = Annotated[Principal, Depends(require_roles("marketer"))]


async def get_actor(
    principal: MarketerDep, x_origin: Annotated[str | None, Header()] = None
) -> Actor:
    return Actor(principal.tenant, principal.sub, (x_origin or principal.client or "")[:200])


async def get_reader(principal: PrincipalDep) -> Principal:
    return principal


ActorDep = Annotated[Actor, Depends(get_actor)]


async def get_settings(request: Request) -> CampaignsSettings:
    settings: CampaignsSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[CampaignsSettings, Depends(get_settings)]
