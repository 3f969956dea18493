"""`GET /v1/changes`: the tenant's events from the event log, in a stable order, resumable
from an opaque cursor, so a sync job can follow every domain without NATS.

Order and the late-commit problem: positions come from a sequence when a row is inserted,
but rows become visible when their transaction commits, in any order; a reader that served
position 11 could later find 10 committed behind its cursor. The feed is therefore ordered
by `(txid, position)` (writing transaction id, then position) and only rows of transactions
older than the oldest one still running are served (`txid < pg_snapshot_xmin(...)`): every
row that can still appear has a larger transaction id than anything served. The cost is a
lag of at most the longest writing transaction on the database server (milliseconds here).

A page that reaches the end still returns a `next_cursor` (the read horizon), so polling an
idle tenant keeps the cursor fresh. Cursors stay valid for the retention period; one older
than the newest pruned row is a 410 naming `earliest_cursor`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from chassis.http import decode_cursor, encode_cursor
from chassis.problems import Forbidden, ProblemError, Unprocessable, invalid
from gateway.access import AdmittedDep
from gateway.feed import patterns

router = APIRouter(prefix="/v1/changes", tags=["changes"])

FEED_READERS = frozenset({"admin", "erp_sync", "service"})

Point = tuple[int, int]  # (txid, position)

_HEAD = (
    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, h.txid::text, h.position "
    "FROM (SELECT 1) AS one LEFT JOIN event_log_horizon h ON h.id = 1"
)


class CursorExpired(ProblemError):
    status, title = 410, "Gone"


class Change(BaseModel):
    cursor: str = Field(description="Resume after this change with `after=<cursor>`.")
    id: str = Field(description="The CloudEvent id.")
    type: str = Field(examples=["crm.pipeline.deal.won.v1"])
    source: str = Field(examples=["crm/pipeline"])
    subject: str = Field(description="The aggregate id.")
    aggregate: str = Field(examples=["pipeline.deal"])
    sequence: int = Field(description="The aggregate's version after this change.")
    time: datetime
    data: dict[str, Any] = Field(description="The event message in the protobuf JSON mapping.")


class ChangePage(BaseModel):
    items: list[Change]
    next_cursor: str = Field(description="Always set: poll again with it.")
    has_more: bool = Field(description="True when more changes are ready right now.")


def cursor_of(point: Point) -> str:
    return encode_cursor({"x": str(point[0]), "p": point[1]})


def point_of(cursor: str) -> Point:
    try:
        value = decode_cursor(cursor) or {}
        x, p = int(value["x"]), int(value["p"])
    except (Unprocessable, KeyError, TypeError, ValueError):
        raise invalid("after", "not a cursor returned by this API") from None
    if x < 0 or p < 0:
        raise invalid("after", "not a cursor returned by this API")
    return x, p


@router.get(
    "",
    response_model=ChangePage,
    responses={410: {"description": "The cursor is older than the retention period."}},
)
async def list_changes(
    request: Request,
    principal: AdmittedDep,
    after: Annotated[str | None, Query(description="A cursor from a previous page.")] = None,
    types: Annotated[
        str | None,
        Query(
            description="Comma-separated ce-type patterns, `*` matches anything, e.g. "
            "crm.pipeline.deal.*"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
) -> Response:
    """Every change of the tenant across domains, oldest first, from `after` on."""
    if not principal.roles & FEED_READERS:
        raise Forbidden(f"requires one of the roles: {', '.join(sorted(FEED_READERS))}")
    max_limit: int = request.app.state.settings.changes_max_limit
    if limit > max_limit:
        raise invalid("limit", f"at most {max_limit}")
    wanted = patterns.parse_query(types)
    start = point_of(after) if after else None
    pool = await request.app.state.db.pool()
    async with pool.acquire() as conn:
        head = await conn.fetchrow(_HEAD)
        xmin = int(head[0])
        horizon: Point | None = (int(head[1]), int(head[2])) if head[1] is not None else None
        if start is not None and horizon is not None and start < horizon:
            raise CursorExpired(
                "the cursor is older than the retention period of the change feed; "
                "resume from earliest_cursor (changes in between are gone)",
                earliest_cursor=cursor_of(horizon),
            )
        if start is None:
            start = horizon or (0, 0)
        args: list[Any] = [principal.tenant, str(start[0]), start[1], str(xmin)]
        where = (
            "tenant_id = $1 AND (txid, position) > ($2::text::xid8, $3) AND txid < $4::text::xid8"
        )
        if wanted:
            args.append([patterns.like(p) for p in wanted])
            where += f" AND ce_type LIKE ANY (${len(args)}::text[])"
        args.append(limit + 1)
        rows = await conn.fetch(
            "SELECT position, txid::text, event_id, ce_type, source, aggregate, aggregate_id, "
            f"version, time, data::text FROM event_log WHERE {where} "
            f"ORDER BY txid, position LIMIT ${len(args)}",
            *args,
        )
    has_more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        head = {
            "cursor": cursor_of((int(r[1]), int(r[0]))),
            "id": str(r[2]),
            "type": r[3],
            "source": r[4],
            "subject": r[6],
            "aggregate": r[5],
            "sequence": r[7],
            "time": r[8].isoformat().replace("+00:00", "Z"),
        }
        # the stored JSON text goes out as it is (no parse and re-serialisation)
        items.append(json.dumps(head, separators=(",", ":"))[:-1] + ',"data":' + r[9] + "}")
    if has_more:
        last = rows[-1]
        next_point = (int(last[1]), int(last[0]))
    else:
        # Everything of transactions before xmin has been looked at.
        next_point = max(start, (xmin, 0))
    tail = json.dumps({"next_cursor": cursor_of(next_point), "has_more": has_more})
    body = '{"items":[' + ",".join(items) + "]," + tail[1:]
    return Response(content=body, media_type="application/json")
