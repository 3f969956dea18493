"""Every query on deals, their external ids and their stage history. Rows travel as plain
dicts (raw asyncpg on the session's connection): the batch path handles a thousand rows per
request. Every statement is scoped by tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from pipeline.core.common import Row, Sort, execute, executemany, fetch

DEAL_COLUMNS = (
    "tenant_id",
    "id",
    "name",
    "contact_id",
    "company_id",
    "owner_id",
    "pipeline_id",
    "stage_id",
    "amount",
    "currency",
    "expected_close_date",
    "forecast_category",
    "line_items",
    "splits",
    "custom_fields",
    "external_ids",
    "status",
    "lost_reason",
    "closed_at",
    "created_by",
    "created_at",
    "updated_at",
    "version",
    "deleted_at",
)
JSON_COLUMNS = frozenset({"line_items", "splits", "custom_fields", "external_ids"})
WRITABLE = DEAL_COLUMNS[2:]

SELECT = (
    "SELECT "
    + ", ".join(f"d.{c}" for c in DEAL_COLUMNS)
    + ", s.name AS stage_name, s.forecast_category AS stage_forecast_category "
    "FROM deals d JOIN stages s ON s.tenant_id = d.tenant_id AND s.id = d.stage_id "
    "WHERE d.tenant_id = $1"
)


def _json(row: Row, name: str) -> str:
    value = row.get(name)
    if value is None:
        value = [] if name in ("line_items", "splits") else {}
    return json.dumps(value, separators=(",", ":"))


def _params(row: Row, names: Sequence[str]) -> list[Any]:
    return [_json(row, n) if n in JSON_COLUMNS else row.get(n) for n in names]


async def get_deals(
    session: AsyncSession, tenant: str, ids: Sequence[uuid.UUID], *, for_update: bool = False
) -> list[Row]:
    """Deals in any state (deleted included), by id."""
    if not ids:
        return []
    sql = SELECT + " AND d.id = ANY($2::uuid[]) ORDER BY d.id"
    if for_update:
        sql += " FOR UPDATE OF d"
    return await fetch(session, sql, tenant, list(ids))


async def ids_by_external(
    session: AsyncSession, tenant: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], uuid.UUID]:
    pairs = list(set(keys))
    if not pairs:
        return {}
    rows = await fetch(
        session,
        "SELECT k.system, k.external_id, x.deal_id "
        "FROM unnest($2::text[], $3::text[]) AS k(system, external_id) "
        "CROSS JOIN LATERAL (SELECT deal_id FROM deal_external_ids WHERE tenant_id = $1 "
        "AND system = k.system AND external_id = k.external_id LIMIT 1) AS x",
        tenant,
        [p[0] for p in pairs],
        [p[1] for p in pairs],
    )
    return {(r["system"], r["external_id"]): r["deal_id"] for r in rows}


@dataclass
class PipelineInfo:
    id: uuid.UUID
    deleted: bool
    stages: list[Row] = field(default_factory=list)  # live stages in order

    def first_open(self) -> Row | None:
        return next((s for s in self.stages if not s["is_won"] and not s["is_lost"]), None)

    def won(self) -> Row | None:
        return next((s for s in self.stages if s["is_won"]), None)

    def lost(self) -> Row | None:
        return next((s for s in self.stages if s["is_lost"]), None)


@dataclass
class Catalog:
    """The pipelines and stages a write refers to (one query for all items)."""

    pipelines: dict[uuid.UUID, PipelineInfo]
    stages: dict[uuid.UUID, Row]


async def load_catalog(
    session: AsyncSession, tenant: str, pipeline_ids: Iterable[uuid.UUID]
) -> Catalog:
    ids = list(set(pipeline_ids))
    if not ids:
        return Catalog({}, {})
    rows = await fetch(
        session,
        "SELECT p.id AS pipeline_id, p.deleted_at AS pipeline_deleted_at, s.id, s.name, "
        "s.position, s.probability, s.forecast_category, s.is_won, s.is_lost, s.deleted_at "
        "FROM pipelines p LEFT JOIN stages s ON s.tenant_id = p.tenant_id "
        "AND s.pipeline_id = p.id WHERE p.tenant_id = $1 AND p.id = ANY($2::uuid[]) "
        "ORDER BY p.id, s.position",
        tenant,
        ids,
    )
    pipelines: dict[uuid.UUID, PipelineInfo] = {}
    stages: dict[uuid.UUID, Row] = {}
    for r in rows:
        info = pipelines.setdefault(
            r["pipeline_id"],
            PipelineInfo(r["pipeline_id"], r["pipeline_deleted_at"] is not None),
        )
        if r["id"] is None:
            continue
        stages[r["id"]] = r
        if r["deleted_at"] is None:
            info.stages.append(r)
    return Catalog(pipelines, stages)


async def insert_deals(session: AsyncSession, rows: Sequence[Row]) -> None:
    cols = ", ".join(DEAL_COLUMNS)
    marks = ", ".join(f"${i + 1}" for i in range(len(DEAL_COLUMNS)))
    await executemany(
        session,
        f"INSERT INTO deals ({cols}) VALUES ({marks})",
        [_params(r, DEAL_COLUMNS) for r in rows],
    )


async def update_deals(session: AsyncSession, rows: Sequence[Row]) -> None:
    sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(WRITABLE))
    await executemany(
        session,
        f"UPDATE deals SET {sets} WHERE tenant_id = $1 AND id = $2",
        [[r["tenant_id"], r["id"], *_params(r, WRITABLE)] for r in rows],
    )


async def add_external_ids(
    session: AsyncSession, tenant: str, entries: Sequence[tuple[str, str, uuid.UUID]]
) -> None:
    await executemany(
        session,
        "INSERT INTO deal_external_ids (tenant_id, system, external_id, deal_id) "
        "VALUES ($1, $2, $3, $4)",
        [(tenant, s, e, d) for s, e, d in entries],
    )


async def remove_external_ids(
    session: AsyncSession, tenant: str, keys: Sequence[tuple[str, str]]
) -> None:
    if keys:
        await execute(
            session,
            "DELETE FROM deal_external_ids x USING unnest($2::text[], $3::text[]) AS k(s, e) "
            "WHERE x.tenant_id = $1 AND x.system = k.s AND x.external_id = k.e",
            tenant,
            [k[0] for k in keys],
            [k[1] for k in keys],
        )


async def remove_external_ids_of(session: AsyncSession, tenant: str, deal_id: uuid.UUID) -> None:
    await execute(
        session,
        "DELETE FROM deal_external_ids WHERE tenant_id = $1 AND deal_id = $2",
        tenant,
        deal_id,
    )


# --- stage history ----------------------------------------------------------------------------

HISTORY_COLUMNS = (
    "tenant_id",
    "deal_id",
    "pipeline_id",
    "stage_id",
    "from_stage_id",
    "entered_at",
    "entered_by",
    "amount",
    "currency",
    "left_at",
    "to_stage_id",
)


async def insert_history(session: AsyncSession, rows: Sequence[Row]) -> None:
    cols = ", ".join(HISTORY_COLUMNS)
    marks = ", ".join(f"${i + 1}" for i in range(len(HISTORY_COLUMNS)))
    await executemany(
        session,
        f"INSERT INTO deal_stage_history ({cols}) VALUES ({marks})",
        [[r.get(c) for c in HISTORY_COLUMNS] for r in rows],
    )


async def close_history(
    session: AsyncSession, tenant: str, closes: Sequence[tuple[uuid.UUID, datetime, uuid.UUID]]
) -> None:
    """Complete the open stay of each deal: left_at (never before it was entered) and the
    stage it went to."""
    await executemany(
        session,
        "UPDATE deal_stage_history SET left_at = GREATEST($3::timestamptz, entered_at), "
        "to_stage_id = $4 WHERE tenant_id = $1 AND deal_id = $2 AND left_at IS NULL",
        [(tenant, d, at, to) for d, at, to in closes],
    )


async def history(session: AsyncSession, tenant: str, deal_id: uuid.UUID) -> list[Row]:
    return await fetch(
        session,
        "SELECT stage_id, from_stage_id, to_stage_id, entered_at, entered_by, left_at, amount, "
        "currency FROM deal_stage_history WHERE tenant_id = $1 AND deal_id = $2 "
        "ORDER BY entered_at, id",
        tenant,
        deal_id,
    )


async def stage_before_close(
    session: AsyncSession, tenant: str, deal_id: uuid.UUID
) -> uuid.UUID | None:
    """The stage a closed deal came from (the from_stage of its open won/lost stay)."""
    rows = await fetch(
        session,
        "SELECT from_stage_id FROM deal_stage_history WHERE tenant_id = $1 AND deal_id = $2 "
        "ORDER BY (left_at IS NULL) DESC, entered_at DESC, id DESC LIMIT 1",
        tenant,
        deal_id,
    )
    return rows[0]["from_stage_id"] if rows else None


# --- lists ------------------------------------------------------------------------------------


@dataclass
class DealFilter:
    owner_id: str | None = None
    pipeline_id: uuid.UUID | None = None
    stage_id: uuid.UUID | None = None
    status: str | None = None
    contact_id: uuid.UUID | None = None
    company_id: uuid.UUID | None = None
    expected_close_from: date | None = None
    expected_close_to: date | None = None
    updated_since: datetime | None = None


async def list_deals(
    session: AsyncSession,
    tenant: str,
    owners: list[str] | None,
    f: DealFilter,
    sort: Sort,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Row]:
    args: list[Any] = [tenant]
    where = ["d.deleted_at IS NULL"]

    def add(cond: str, value: Any) -> None:
        args.append(value)
        where.append(cond.replace("?", f"${len(args)}"))

    if owners is not None:
        add("d.owner_id = ANY(?::text[])", owners)
    for name, col in (
        ("owner_id", "owner_id"),
        ("pipeline_id", "pipeline_id"),
        ("stage_id", "stage_id"),
        ("status", "status"),
        ("contact_id", "contact_id"),
        ("company_id", "company_id"),
    ):
        value = getattr(f, name)
        if value is not None:
            add(f"d.{col} = ?", value)
    if f.expected_close_from is not None:
        add("d.expected_close_date >= ?", f.expected_close_from)
    if f.expected_close_to is not None:
        add("d.expected_close_date <= ?", f.expected_close_to)
    if f.updated_since is not None:
        add("d.updated_at >= ?", f.updated_since)
    if after is not None:
        where.append(sort.clause("d", len(args) + 1))
        args += list(after)
    args.append(limit + 1)
    sql = f"{SELECT} AND {' AND '.join(where)} ORDER BY {sort.order_by('d')} LIMIT ${len(args)}"
    return await fetch(session, sql, *args)
