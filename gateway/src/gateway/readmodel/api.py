"""`GET /v1/customers/{id}/360` and `/timeline`: single indexed reads with the raw asyncpg
pool; the stored document text is returned as it is (no ORM, no re-serialisation)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.routing import Route

from chassis.auth import Principal
from chassis.http import decode_cursor, encode_cursor
from chassis.problems import NotFound, invalid
from gateway.access import Access, AdmittedDep

router = APIRouter(prefix="/v1/customers", tags=["customers"])

# Roles that see every customer of their tenant; a sales rep sees the customers they own.
TENANT_WIDE = frozenset({"admin", "sales_manager", "marketer", "support_agent"})
OWN_ONLY = frozenset({"sales_rep"})
_READERS = TENANT_WIDE | OWN_ONLY

_READ_360 = (
    "SELECT doc, revision, owner_id FROM customer_360 "
    "WHERE tenant_id = $1 AND contact_id = $2 AND doc IS NOT NULL"
)
_READ_OWNER = (
    "SELECT owner_id FROM customer_360 WHERE tenant_id = $1 AND contact_id = $2 AND doc IS NOT NULL"
)


class CustomerNotFound(NotFound):
    def __init__(self, contact_id: str) -> None:
        super().__init__(f"customer {contact_id} not found")


def _contact_uuid(principal: Principal, contact_id: str) -> uuid.UUID:
    """The id to read, or 404 when it is no id or the caller may see no customer at all."""
    if not principal.roles & _READERS:
        raise CustomerNotFound(contact_id)
    try:
        return uuid.UUID(contact_id)
    except ValueError:
        raise CustomerNotFound(contact_id) from None


def _visible(principal: Principal, owner_id: str | None) -> bool:
    return bool(principal.roles & TENANT_WIDE) or owner_id == principal.sub


class Customer360(BaseModel):
    """The precomputed 360-degree view of one customer."""

    customer_id: str
    contact: dict[str, Any]
    company: dict[str, Any] | None = None
    deals: list[dict[str, Any]] = Field(default_factory=list)
    orders: list[dict[str, Any]] = Field(default_factory=list)
    tickets: list[dict[str, Any]] = Field(default_factory=list)
    campaigns: list[dict[str, Any]] = Field(default_factory=list)
    tasks: list[dict[str, Any]] = Field(default_factory=list, description="Open tasks.")
    sequences: list[dict[str, Any]] = Field(
        default_factory=list, description="Nurture sequence enrollments."
    )
    segments: list[dict[str, Any]] = Field(
        default_factory=list, description="Segments the customer is a member of."
    )
    loyalty: dict[str, Any] | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    as_of: datetime = Field(description="Time of the last event applied to the document.")
    versions: dict[str, int] = Field(
        description="Version of each aggregate the document reflects, e.g. contact, company."
    )


async def serve_customer_360(request: Request) -> Response:
    """The hot path, served as a plain Starlette endpoint (no dependency solving): verify,
    charge the rate limit, one indexed read, the stored JSON text out as it is."""
    access: Access = request.app.state.access
    principal, _ = await access.admit(request.headers.get("authorization"))
    contact_id: str = request.path_params["contact_id"]
    cid = _contact_uuid(principal, contact_id)
    pool = await request.app.state.db.pool()
    row = await pool.fetchrow(_READ_360, principal.tenant, cid)
    if row is None or not _visible(principal, row[2]):
        raise CustomerNotFound(contact_id)
    tag = f'"{row[1]}"'
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and tag in if_none_match:
        return Response(status_code=304, headers={"ETag": tag})
    return Response(content=row[0], media_type="application/json", headers={"ETag": tag})


# Served by `serve_customer_360` (mounted ahead of it, see `fast_routes`); this declaration
# documents the endpoint in the OpenAPI document and answers the same if it is ever reached.
@router.get(
    "/{contact_id}/360",
    response_model=Customer360,
    responses={304: {"description": "Not modified"}, 404: {"description": "Not found"}},
)
async def get_customer_360(
    contact_id: str,
    request: Request,
    principal: AdmittedDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The 360-degree view of a customer: contact, company, deals, orders, tickets, ..."""
    return await serve_customer_360(request)


def fast_routes() -> list[Route]:
    """Routes to put in front of the app's routes: they bypass FastAPI's request handling."""
    return [Route("/v1/customers/{contact_id}/360", serve_customer_360, methods=["GET"])]


def _like(pattern: str) -> str:
    """A `*` pattern as a LIKE pattern (LIKE's own wildcards taken literally)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


class TimelineEntry(BaseModel):
    id: str
    occurred_at: datetime
    kind: str = Field(examples=["contact.updated"])
    summary: str = Field(examples=["Contact updated: email"])
    data: dict[str, Any]
    event_id: str


class TimelinePage(BaseModel):
    items: list[TimelineEntry]
    next_cursor: str | None = None


@router.get("/{contact_id}/timeline", response_model=TimelinePage)
async def get_customer_timeline(
    contact_id: str,
    request: Request,
    principal: AdmittedDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    kind: Annotated[
        str | None,
        Query(description="Comma-separated kinds to keep, e.g. contact.updated,contact.merged"),
    ] = None,
    types: Annotated[
        str | None,
        Query(
            description="Comma-separated kind patterns, `*` matching anything, e.g. "
            "`deal.*,ticket.*,email.opened`",
            max_length=1000,
        ),
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Only entries at or after this time (RFC 3339).")
    ] = None,
) -> Response:
    """What happened to a customer, newest first (keyset pagination)."""
    cid = _contact_uuid(principal, contact_id)
    after = decode_cursor(cursor)
    args: list[Any] = [principal.tenant, cid]
    where = "tenant_id = $1 AND contact_id = $2"
    if after is not None:
        try:
            args += [datetime.fromisoformat(str(after["t"])), int(after["i"])]
        except (KeyError, ValueError, TypeError):
            raise invalid("cursor", "not a cursor returned by this API") from None
        where += " AND (occurred_at, id) < ($3, $4)"
    if kind:
        args.append([k.strip() for k in kind.split(",") if k.strip()])
        where += f" AND kind = ANY(${len(args)})"
    if types:
        patterns = [_like(t.strip()) for t in types.split(",") if t.strip()]
        if patterns:
            args.append(patterns)
            where += f" AND kind LIKE ANY(${len(args)})"
    if since is not None:
        if since.tzinfo is None:
            raise invalid("since", "give a time zone, e.g. 2026-11-01T00:00:00Z")
        args.append(since)
        where += f" AND occurred_at >= ${len(args)}"
    args.append(limit + 1)
    sql = (
        f"SELECT id, occurred_at, kind, summary, data, event_id FROM timeline "
        f"WHERE {where} ORDER BY occurred_at DESC, id DESC LIMIT ${len(args)}"
    )
    pool = await request.app.state.db.pool()
    async with pool.acquire() as conn:
        owner = await conn.fetchrow(_READ_OWNER, principal.tenant, cid)
        if owner is None or not _visible(principal, owner[0]):
            raise CustomerNotFound(contact_id)
        rows = await conn.fetch(sql, *args)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": str(r[0]),
            "occurred_at": r[1].isoformat().replace("+00:00", "Z"),
            "kind": r[2],
            "summary": r[3],
            "data": json.loads(r[4]),
            "event_id": str(r[5]),
        }
        for r in rows
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor({"t": last[1].isoformat(), "i": last[0]})
    body = json.dumps({"items": items, "next_cursor": next_cursor}, separators=(",", ":"))
    return Response(content=body, media_type="application/json")
