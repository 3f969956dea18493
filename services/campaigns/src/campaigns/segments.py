"""Segments: dynamic (a filter tree evaluated at read time over the replica, so it is always
current) or static (explicit members). Members, count and preview are one SQL query each."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns.common import (
    Actor,
    ActorDep,
    ResourceNotFound,
    Row,
    SettingsDep,
    emit,
    execute,
    now,
    one,
    rows,
    struct,
)
from campaigns.filters import ACTIVE, Compiled, ScoreModel, compile_filter
from chassis.db import SessionDep
from chassis.http import Page, check_if_match, decode_cursor, encode_cursor, set_etag
from chassis.problems import invalid
from crm.campaigns.v1 import campaigns_pb2 as pb

EXAMPLE_FILTER = {
    "all": [
        {"field": "tags", "op": "contains", "value": "vip"},
        {
            "any": [
                {"field": "lifecycle_stage", "op": "in", "value": ["lead", "mql"]},
                {"field": "cf.region", "op": "eq", "value": "EMEA"},
            ]
        },
    ]
}


class SegmentIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["VIP leads"])
    type: Literal["dynamic", "static"] = "dynamic"
    filter: dict[str, Any] | None = Field(default=None, examples=[EXAMPLE_FILTER])
    contact_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10000)


class SegmentPatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    filter: dict[str, Any] | None = None


class SegmentPublic(BaseModel):
    id: uuid.UUID
    name: str
    type: str
    filter: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    version: int


class MembersIn(BaseModel):
    contact_ids: list[uuid.UUID] = Field(min_length=1, max_length=10000)


class MemberPublic(BaseModel):
    contact_id: uuid.UUID
    email: str | None
    first_name: str | None
    last_name: str | None
    lifecycle_stage: str | None


class CountOut(BaseModel):
    count: int


class PreviewIn(BaseModel):
    filter: dict[str, Any] = Field(examples=[EXAMPLE_FILTER])
    limit: int = Field(default=20, ge=0, le=100)


class PreviewOut(BaseModel):
    count: int
    items: list[MemberPublic]


# --- evaluation -----------------------------------------------------------------------------


async def score_models(session: AsyncSession, tenant: str) -> dict[str, ScoreModel]:
    found: dict[str, ScoreModel] = {}
    for r in await rows(
        session,
        "SELECT id, name, half_life_days FROM scoring_models "
        "WHERE tenant_id = :t AND deleted_at IS NULL",
        {"t": tenant},
    ):
        model = ScoreModel(r["id"], float(r["half_life_days"]))
        found[r["name"]] = model
        found[str(r["id"])] = model
    return found


async def compile_tree(
    session: AsyncSession, tenant: str, tree: Any, at: datetime | None = None, prefix: str = ""
) -> Compiled:
    return compile_filter(
        tree, now=at or now(), models=await score_models(session, tenant), prefix=prefix
    )


async def condition(
    session: AsyncSession, segment: Row, at: datetime | None = None, prefix: str = ""
) -> Compiled:
    """The membership test of a segment as SQL over `contacts c` (active contacts only)."""
    if segment["type"] == "static":
        sql = (
            "EXISTS (SELECT 1 FROM segment_members sm WHERE sm.tenant_id = c.tenant_id "
            f"AND sm.segment_id = :{prefix}seg_id AND sm.contact_id = c.id)"
        )
        compiled = Compiled(sql, {f"{prefix}seg_id": segment["id"]})
    else:
        compiled = await compile_tree(
            session, segment["tenant_id"], segment["filter"], at, prefix=prefix
        )
    return Compiled(f"({ACTIVE}) AND {compiled.sql}", compiled.params)


async def count(session: AsyncSession, tenant: str, cond: Compiled) -> int:
    row = await one(
        session,
        f"SELECT count(*) AS n FROM contacts c WHERE c.tenant_id = :tenant AND {cond.sql}",
        {**cond.params, "tenant": tenant},
    )
    return int(row["n"]) if row else 0


async def members(
    session: AsyncSession, tenant: str, cond: Compiled, after: uuid.UUID | None, limit: int
) -> list[Row]:
    return await rows(
        session,
        "SELECT c.id AS contact_id, c.email, c.first_name, c.last_name, c.lifecycle_stage "
        f"FROM contacts c WHERE c.tenant_id = :tenant AND {cond.sql} "
        "AND (CAST(:after AS uuid) IS NULL OR c.id > CAST(:after AS uuid)) "
        "ORDER BY c.id LIMIT :limit",
        {**cond.params, "tenant": tenant, "after": after, "limit": limit},
    )


async def contains(session: AsyncSession, segment: Row, contact_id: uuid.UUID) -> bool:
    cond = await condition(session, segment)
    row = await one(
        session,
        "SELECT 1 AS hit FROM contacts c WHERE c.tenant_id = :tenant AND c.id = :cid AND "
        f"{cond.sql}",
        {**cond.params, "tenant": segment["tenant_id"], "cid": contact_id},
    )
    return row is not None


# --- service --------------------------------------------------------------------------------


def message(row: Row) -> pb.Segment:
    return pb.Segment(
        id=str(row["id"]),
        name=row["name"],
        type=row["type"],
        filter=struct(row["filter"]),
        version=row["version"],
    )


async def get(
    session: AsyncSession, tenant: str, segment_id: uuid.UUID, *, lock: bool = False
) -> Row:
    row = await one(
        session,
        "SELECT * FROM segments WHERE tenant_id = :t AND id = :i AND deleted_at IS NULL"
        + (" FOR UPDATE" if lock else ""),
        {"t": tenant, "i": segment_id},
    )
    if row is None:
        raise ResourceNotFound("segment", segment_id)
    return row


async def _write(
    session: AsyncSession, actor: Actor, row: Row, change: str, changed: list[str]
) -> Row:
    saved = await one(
        session,
        "INSERT INTO segments (tenant_id, id, name, type, filter, created_at, updated_at, version, "
        "deleted_at) VALUES (:tenant_id, :id, :name, :type, CAST(:filter AS jsonb), :created_at, "
        ":updated_at, :version, :deleted_at) ON CONFLICT (tenant_id, id) DO UPDATE SET "
        "name = EXCLUDED.name, filter = EXCLUDED.filter, updated_at = EXCLUDED.updated_at, "
        "version = EXCLUDED.version, deleted_at = EXCLUDED.deleted_at RETURNING *",
        {**row, "filter": json.dumps(row["filter"]) if row["filter"] is not None else None},
    )
    assert saved is not None
    from campaigns import memberships  # imports this module

    await memberships.request_refresh(session, actor.tenant, saved["id"])
    emit(
        session,
        actor,
        pb.SegmentChanged(change=change, segment=message(saved)),
        saved["id"],
        saved["version"],
        changed,
    )
    return saved


async def _check_contacts(
    session: AsyncSession, tenant: str, ids: list[uuid.UUID], path: str
) -> None:
    known = {
        r["id"]
        for r in await rows(
            session,
            f"SELECT id FROM contacts c WHERE c.tenant_id = :t AND c.id = ANY(:ids) AND {ACTIVE}",
            {"t": tenant, "ids": ids},
        )
    }
    for i, cid in enumerate(ids):
        if cid not in known:
            raise invalid([path, i], f"unknown contact {cid}")


async def create(session: AsyncSession, actor: Actor, body: SegmentIn) -> Row:
    if body.type == "dynamic":
        if body.filter is None:
            raise invalid("filter", "a dynamic segment needs a filter")
        if body.contact_ids:
            raise invalid("contact_ids", "only a static segment has explicit members")
        await compile_tree(session, actor.tenant, body.filter)
    elif body.filter is not None:
        raise invalid("filter", "a static segment has no filter; use contact_ids")
    ids = list(dict.fromkeys(body.contact_ids))
    if ids:
        await _check_contacts(session, actor.tenant, ids, "contact_ids")
    at = now()
    row = {
        "tenant_id": actor.tenant,
        "id": uuid.uuid4(),
        "name": body.name,
        "type": body.type,
        "filter": body.filter,
        "created_at": at,
        "updated_at": at,
        "version": 1,
        "deleted_at": None,
    }
    saved = await _write(session, actor, row, "created", [])
    if ids:
        await _add_members(session, actor.tenant, saved["id"], ids)
    return saved


async def _add_members(
    session: AsyncSession, tenant: str, segment_id: uuid.UUID, ids: list[uuid.UUID]
) -> None:
    await execute(
        session,
        "INSERT INTO segment_members (tenant_id, segment_id, contact_id, added_at) "
        "SELECT :t, :s, unnest(CAST(:ids AS uuid[])), :now ON CONFLICT DO NOTHING",
        {"t": tenant, "s": segment_id, "ids": ids, "now": now()},
    )


async def update(
    session: AsyncSession,
    actor: Actor,
    segment_id: uuid.UUID,
    body: SegmentPatch,
    if_match: str | None,
) -> Row:
    row = await get(session, actor.tenant, segment_id, lock=True)
    check_if_match(if_match, row["version"])
    changed = []
    if body.name is not None and body.name != row["name"]:
        row["name"] = body.name
        changed.append("name")
    if body.filter is not None:
        if row["type"] == "static":
            raise invalid("filter", "a static segment has no filter")
        await compile_tree(session, actor.tenant, body.filter)
        if body.filter != row["filter"]:
            row["filter"] = body.filter
            changed.append("filter")
    if not changed:
        return row
    row.update(updated_at=now(), version=row["version"] + 1)
    return await _write(session, actor, row, "updated", changed)


async def delete(
    session: AsyncSession, actor: Actor, segment_id: uuid.UUID, if_match: str | None
) -> None:
    row = await get(session, actor.tenant, segment_id, lock=True)
    check_if_match(if_match, row["version"])
    at = now()
    row.update(updated_at=at, deleted_at=at, version=row["version"] + 1)
    await _write(session, actor, row, "deleted", [])


async def change_members(
    session: AsyncSession, actor: Actor, segment_id: uuid.UUID, ids: list[uuid.UUID], add: bool
) -> Row:
    row = await get(session, actor.tenant, segment_id, lock=True)
    if row["type"] != "static":
        raise invalid("contact_ids", "members of a dynamic segment come from its filter")
    ids = list(dict.fromkeys(ids))
    if add:
        await _check_contacts(session, actor.tenant, ids, "contact_ids")
        await _add_members(session, actor.tenant, segment_id, ids)
    else:
        await execute(
            session,
            "DELETE FROM segment_members WHERE tenant_id = :t AND segment_id = :s "
            "AND contact_id = ANY(:ids)",
            {"t": actor.tenant, "s": segment_id, "ids": ids},
        )
    row.update(updated_at=now(), version=row["version"] + 1)
    return await _write(
        session, actor, row, "members_added" if add else "members_removed", ["members"]
    )


# --- API ------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1/segments", tags=["segments"])
IfMatch = Annotated[str | None, Header()]


def out(row: Row, response: Response | None = None) -> SegmentPublic:
    if response is not None:
        set_etag(response, row["version"])
    return SegmentPublic.model_validate(row)


def _after(cursor: str | None) -> uuid.UUID | None:
    decoded = decode_cursor(cursor)
    if decoded is None:
        return None
    try:
        return uuid.UUID(str(decoded.get("id")))
    except ValueError as e:
        raise invalid("cursor", "not a cursor returned by this API") from e


@router.post("", status_code=201, response_model=SegmentPublic)
async def create_segment(
    body: SegmentIn, session: SessionDep, actor: ActorDep, response: Response
) -> SegmentPublic:
    """Create a dynamic (filter) or static (explicit members) segment."""
    row = await create(session, actor, body)
    response.headers["Location"] = f"/v1/segments/{row['id']}"
    return out(row, response)


@router.get("", response_model=Page[SegmentPublic])
async def list_segments(
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[SegmentPublic]:
    """List segments (keyset by id)."""
    found = await rows(
        session,
        "SELECT * FROM segments WHERE tenant_id = :t AND deleted_at IS NULL "
        "AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :n",
        {"t": actor.tenant, "after": _after(cursor), "n": limit + 1},
    )
    nxt = encode_cursor({"id": str(found[limit - 1]["id"])}) if len(found) > limit else None
    return Page(items=[out(r) for r in found[:limit]], next_cursor=nxt)


@router.post("/preview", response_model=PreviewOut)
async def preview(body: PreviewIn, session: SessionDep, actor: ActorDep) -> PreviewOut:
    """Evaluate a filter without saving it: the count and the first members."""
    compiled = await compile_tree(session, actor.tenant, body.filter)
    cond = Compiled(f"({ACTIVE}) AND {compiled.sql}", compiled.params)
    n = await count(session, actor.tenant, cond)
    items = await members(session, actor.tenant, cond, None, body.limit) if body.limit else []
    return PreviewOut(count=n, items=[MemberPublic.model_validate(r) for r in items])


@router.get("/{segment_id}", response_model=SegmentPublic)
async def get_segment(
    segment_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> SegmentPublic:
    """Get a segment."""
    return out(await get(session, actor.tenant, segment_id), response)


@router.patch("/{segment_id}", response_model=SegmentPublic)
async def patch_segment(
    segment_id: uuid.UUID,
    body: SegmentPatch,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> SegmentPublic:
    """Rename a segment or change its filter (If-Match required)."""
    return out(await update(session, actor, segment_id, body, if_match), response)


@router.delete("/{segment_id}", status_code=204)
async def delete_segment(
    segment_id: uuid.UUID, session: SessionDep, actor: ActorDep, if_match: IfMatch = None
) -> None:
    """Delete a segment (If-Match required)."""
    await delete(session, actor, segment_id, if_match)


@router.post("/{segment_id}/members", response_model=SegmentPublic)
async def add_members(
    segment_id: uuid.UUID, body: MembersIn, session: SessionDep, actor: ActorDep, response: Response
) -> SegmentPublic:
    """Add contacts to a static segment (idempotent)."""
    return out(await change_members(session, actor, segment_id, body.contact_ids, True), response)


@router.post("/{segment_id}/members/remove", response_model=SegmentPublic)
async def remove_members(
    segment_id: uuid.UUID, body: MembersIn, session: SessionDep, actor: ActorDep, response: Response
) -> SegmentPublic:
    """Remove contacts from a static segment (idempotent)."""
    return out(await change_members(session, actor, segment_id, body.contact_ids, False), response)


@router.get("/{segment_id}/members", response_model=Page[MemberPublic])
async def list_members(
    segment_id: uuid.UUID,
    session: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: str | None = None,
) -> Page[MemberPublic]:
    """Current members (keyset by contact id); a dynamic segment is evaluated now."""
    limit = min(limit, settings.max_page_size)
    segment = await get(session, actor.tenant, segment_id)
    cond = await condition(session, segment)
    found = await members(session, actor.tenant, cond, _after(cursor), limit + 1)
    nxt = encode_cursor({"id": str(found[limit - 1]["contact_id"])}) if len(found) > limit else None
    return Page(items=[MemberPublic.model_validate(r) for r in found[:limit]], next_cursor=nxt)


@router.get("/{segment_id}/count", response_model=CountOut)
async def count_members(segment_id: uuid.UUID, session: SessionDep, actor: ActorDep) -> CountOut:
    """Number of current members."""
    segment = await get(session, actor.tenant, segment_id)
    return CountOut(count=await count(session, actor.tenant, await condition(session, segment)))


contact_router = APIRouter(tags=["segments"])


class ContactSegment(BaseModel):
    id: uuid.UUID
    name: str
    type: str


async def segments_of(session: AsyncSession, tenant: str, contact_id: uuid.UUID) -> list[Row]:
    """Every segment the contact is in now: one statement testing all segments."""
    found = await rows(
        session,
        "SELECT * FROM segments WHERE tenant_id = :t AND deleted_at IS NULL ORDER BY name, id",
        {"t": tenant},
    )
    if not found:
        return []
    at = now()
    columns, params = [], {"tenant": tenant, "cid": contact_id}
    for n, segment in enumerate(found):
        cond = await condition(session, segment, at, prefix=f"s{n}_")
        params.update(cond.params)
        columns.append(f"({cond.sql}) AS s{n}")
    row = await one(
        session,
        f"SELECT {', '.join(columns)} FROM contacts c WHERE c.tenant_id = :tenant AND c.id = :cid",
        params,
    )
    if row is None:
        return []
    return [s for n, s in enumerate(found) if row[f"s{n}"]]


@contact_router.get("/v1/contacts/{contact_id}/segments", response_model=list[ContactSegment])
async def contact_segments(
    contact_id: uuid.UUID, session: SessionDep, actor: ActorDep
) -> list[ContactSegment]:
    """The segments a contact is a member of now (for the 360 view)."""
    exists = await one(
        session,
        "SELECT 1 AS x FROM contacts WHERE tenant_id = :t AND id = :c AND erased_at IS NULL",
        {"t": actor.tenant, "c": contact_id},
    )
    if exists is None:
        raise ResourceNotFound("contact", contact_id)
    return [
        ContactSegment.model_validate(s)
        for s in await segments_of(session, actor.tenant, contact_id)
    ]
