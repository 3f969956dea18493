"""`GET /v1/customers/{id}/360`, `/timeline` and the `GET /v1/customers` list: indexed
reads with the raw asyncpg pool; the stored document text is returned as it is (no ORM, no
re-serialisation)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.routing import Route

from chassis.auth import Principal
from chassis.http import decode_cursor, encode_cursor
from chassis.problems import Forbidden, NotFound, invalid
from gateway.access import Access, AdmittedDep
from gateway.readmodel.analytics.scoring import SEGMENTS

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
    # One round trip: the customer's owner (no row: no such customer) with the page joined
    # to it (NULLs when the timeline is empty).
    sql = (
        f"SELECT o.owner_id, t.id, t.occurred_at, t.kind, t.summary, t.data, t.event_id "
        f"FROM ({_READ_OWNER}) AS o LEFT JOIN LATERAL ("
        f"SELECT id, occurred_at, kind, summary, data, event_id FROM timeline "
        f"WHERE {where} ORDER BY occurred_at DESC, id DESC LIMIT ${len(args)}"
        f") AS t ON true ORDER BY t.occurred_at DESC, t.id DESC"
    )
    pool = await request.app.state.db.pool()
    rows = await pool.fetch(sql, *args)
    if not rows or not _visible(principal, rows[0][0]):
        raise CustomerNotFound(contact_id)
    rows = [r for r in rows if r[1] is not None]
    more = len(rows) > limit
    rows = rows[:limit]
    # The stored `data` JSON goes out as it is: no decoding and re-encoding of every entry.
    items = ",".join(
        f'{{"id":"{r[1]}","occurred_at":"{r[2].isoformat().replace("+00:00", "Z")}",'
        f'"kind":{json.dumps(r[3])},"summary":{json.dumps(r[4])},"data":{r[5]},'
        f'"event_id":"{r[6]}"}}'
        for r in rows
    )
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor({"t": last[2].isoformat(), "i": last[1]})
    body = f'{{"items":[{items}],"next_cursor":{json.dumps(next_cursor)}}}'
    return Response(content=body, media_type="application/json")


# --- GET /v1/customers: the list over the read model -------------------------------------

Sort = Literal["churn_risk", "health", "updated_at", "name"]
Band = Literal["green", "yellow", "red"]
NO_SEGMENT = "none"

# sort -> (column, its SQL type, ascending?, nullable?); the tie-breaker contact_id goes the
# same way as the column, so that a row comparison continues after the cursor (indexes in
# migration 0004).
_SORTS: dict[str, tuple[str, str, bool, bool]] = {
    "churn_risk": ("churn_risk", "numeric", False, False),
    "health": ("health_score", "integer", True, True),
    "updated_at": ("updated_at", "timestamptz", False, False),
    "name": ("sort_name", "text", True, False),
}


_PARSE: dict[str, Callable[[str], Any]] = {
    "numeric": Decimal,
    "integer": int,
    "timestamptz": datetime.fromisoformat,
    "text": str,
}


class CustomerSummary(BaseModel):
    customer_id: str
    name: str | None = None
    email: str | None = None
    company_name: str | None = None
    owner_id: str | None = None
    rfm_segment: str | None = Field(default=None, examples=["at_risk"])
    health_score: int | None = Field(default=None, examples=[42])
    health_band: str | None = Field(default=None, examples=["yellow"])
    churn_risk: str = Field(examples=["0.70"])
    lifetime_value: list[dict[str, str]] = Field(
        default_factory=list, examples=[[{"currency": "USD", "amount": "600.00"}]]
    )
    updated_at: datetime


class CustomerPage(BaseModel):
    items: list[CustomerSummary]
    next_cursor: str | None = None


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class _Where:
    """WHERE clauses with numbered asyncpg parameters."""

    def __init__(self, *args: Any) -> None:
        self.args: list[Any] = list(args)
        self.clauses: list[str] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)


def _segments(rfm_segment: str | None) -> list[str]:
    wanted = _csv(rfm_segment)
    for s in wanted:
        if s not in SEGMENTS and s != NO_SEGMENT:
            raise invalid("rfm_segment", f"unknown segment {s!r}")
    return wanted


def _keyset(where: _Where, sort: str, cursor: str | None) -> None:
    after = decode_cursor(cursor)
    if after is None:
        return
    column, sql_type, ascending, nullable = _SORTS[sort]
    try:
        if after["s"] != sort:
            raise ValueError("cursor of another sort")
        cid = uuid.UUID(str(after["i"]))
        value: Any = after["v"]
        if value is not None:
            value = _PARSE[sql_type](str(value))
    except (KeyError, ValueError, TypeError, ArithmeticError):
        raise invalid("cursor", "not a cursor returned by this API for this sort") from None
    op = ">" if ascending else "<"
    if value is None:  # only a nullable column sorted nulls last gets here
        where.add(f"({column} IS NULL AND contact_id {op} {where.arg(cid)})")
        return
    clause = f"({column}, contact_id) {op} ({where.arg(value)}::{sql_type}, {where.arg(cid)})"
    where.add(f"({clause} OR {column} IS NULL)" if nullable else clause)


@router.get("", response_model=CustomerPage)
async def list_customers(
    request: Request,
    principal: AdmittedDep,
    q: Annotated[
        str | None,
        Query(description="Text in the name, email or company name.", max_length=200),
    ] = None,
    owner_id: str | None = None,
    rfm_segment: Annotated[
        str | None,
        Query(description="Comma-separated segments; `none` for customers who never bought."),
    ] = None,
    health: Annotated[
        str | None, Query(description="Comma-separated bands: green, yellow, red.")
    ] = None,
    churn_risk_gte: Annotated[Decimal | None, Query(ge=0, le=1)] = None,
    sort: Annotated[
        Sort,
        Query(
            description="churn_risk (highest first), health (lowest first), updated_at "
            "(newest first) or name."
        ),
    ] = "churn_risk",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Response:
    """The customers of the read model with their metrics: e.g. the at-risk list
    (`sort=churn_risk&churn_risk_gte=0.6`), keyset-paginated."""
    if not principal.roles & _READERS:
        raise Forbidden("no role of this tenant may list customers")
    where = _Where(principal.tenant)
    where.add("tenant_id = $1 AND doc IS NOT NULL")
    if not principal.roles & TENANT_WIDE:
        where.add(f"owner_id = {where.arg(principal.sub)}")
    if owner_id:
        where.add(f"owner_id = {where.arg(owner_id)}")
    if q and q.strip():
        where.add(f"search_text LIKE {where.arg('%' + _like(q.strip().lower()) + '%')}")
    segments = _segments(rfm_segment)
    if segments:
        named = [s for s in segments if s != NO_SEGMENT]
        parts = [f"rfm_segment = ANY({where.arg(named)}::text[])"] if named else []
        if NO_SEGMENT in segments:
            parts.append("rfm_segment IS NULL")
        where.add("(" + " OR ".join(parts) + ")")
    bands = _csv(health)
    for b in bands:
        if b not in ("green", "yellow", "red"):
            raise invalid("health", f"unknown band {b!r}: green, yellow or red")
    if bands:
        where.add(f"health_band = ANY({where.arg(bands)}::text[])")
    if churn_risk_gte is not None:
        where.add(f"churn_risk >= {where.arg(churn_risk_gte)}::numeric")
    _keyset(where, sort, cursor)
    column, _, ascending, nullable = _SORTS[sort]
    direction = "ASC" if ascending else "DESC"
    order = f"{column} {direction}{' NULLS LAST' if nullable else ''}, contact_id {direction}"
    sql = (
        "SELECT CAST(contact_id AS text), "
        "btrim(COALESCE(doc #>> '{contact,first_name}', '') || ' ' "
        "|| COALESCE(doc #>> '{contact,last_name}', '')), "
        "doc #>> '{contact,email}', doc #>> '{company,name}', owner_id, "
        "rfm_segment, health_score, health_band, churn_risk, "
        "doc #> '{metrics,lifetime_value}', updated_at, " + column + " "
        f"FROM customer_360 WHERE {' AND '.join(where.clauses)} "
        f"ORDER BY {order} LIMIT {where.arg(limit + 1)}"
    )
    pool = await request.app.state.db.pool()
    rows = await pool.fetch(sql, *where.args)
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "customer_id": r[0],
            "name": r[1] or None,
            "email": r[2],
            "company_name": r[3],
            "owner_id": r[4],
            "rfm_segment": r[5],
            "health_score": r[6],
            "health_band": r[7],
            "churn_risk": f"{r[8]:.2f}",
            "lifetime_value": json.loads(r[9]) if r[9] else [],
            "updated_at": r[10].isoformat().replace("+00:00", "Z"),
        }
        for r in rows
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1][11]
        value = last.isoformat() if isinstance(last, datetime) else last
        next_cursor = encode_cursor(
            {"s": sort, "v": None if value is None else str(value), "i": rows[-1][0]}
        )
    body = json.dumps({"items": items, "next_cursor": next_cursor}, separators=(",", ":"))
    return Response(content=body, media_type="application/json")
