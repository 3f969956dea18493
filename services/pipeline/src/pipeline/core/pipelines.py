"""Pipelines and their ordered stages. Writes are admin-only; every user reads them.

A stage removed from a pipeline (or the stages of a deleted pipeline) is soft-deleted
(`stages.deleted_at`): stage history and reports keep resolving its name."""

from __future__ import annotations

import json
import uuid
from typing import Any

from chassis.http import check_if_match
from chassis.problems import Conflict, NotFound
from pipeline.core.common import (
    Caller,
    FieldError,
    Row,
    Sort,
    ValidationFailed,
    execute,
    executemany,
    fetch,
    fetchrow,
    now,
)
from pipeline.core.events import EventSink
from pipeline.core.schemas import PipelineIn, StageIn

STAGE_FIELDS = ("name", "position", "probability", "forecast_category", "is_won", "is_lost")


class PipelineNotFound(NotFound):
    def __init__(self, pipeline_id: uuid.UUID) -> None:
        super().__init__(f"pipeline {pipeline_id} not found")


_SELECT = """
SELECT p.id, p.name, p.created_at, p.updated_at, p.version,
       COALESCE((SELECT json_agg(json_build_object(
                    'id', s.id, 'name', s.name, 'position', s.position,
                    'probability', s.probability, 'forecast_category', s.forecast_category,
                    'is_won', s.is_won, 'is_lost', s.is_lost) ORDER BY s.position)
                 FROM stages s WHERE s.tenant_id = p.tenant_id AND s.pipeline_id = p.id
                   AND s.deleted_at IS NULL), '[]')::text AS stages_json
FROM pipelines p WHERE p.tenant_id = $1 AND p.deleted_at IS NULL
"""


def _pipeline(row: Row) -> Row:
    out = dict(row)
    stages = json.loads(out.pop("stages_json"))
    for s in stages:
        s["id"] = uuid.UUID(s["id"])
    out["stages"] = stages
    return out


def check_stages(stages: list[StageIn]) -> None:
    """Exactly one won and one lost stage, never both on one stage, at least one open stage,
    unique names."""
    errors: list[FieldError] = []
    won = [i for i, s in enumerate(stages) if s.is_won]
    lost = [i for i, s in enumerate(stages) if s.is_lost]
    for i, s in enumerate(stages):
        if s.is_won and s.is_lost:
            errors.append(FieldError(("stages", i), "a stage cannot be both won and lost"))
    if len(won) != 1:
        errors.append(FieldError(("stages",), f"needs exactly one is_won stage, got {len(won)}"))
    if len(lost) != 1:
        errors.append(FieldError(("stages",), f"needs exactly one is_lost stage, got {len(lost)}"))
    if not any(not s.is_won and not s.is_lost for s in stages):
        errors.append(FieldError(("stages",), "needs at least one open stage"))
    names: set[str] = set()
    for i, s in enumerate(stages):
        if s.name.casefold() in names:
            errors.append(FieldError(("stages", i, "name"), "appears more than once"))
        names.add(s.name.casefold())
    ids = [s.id for s in stages if s.id is not None]
    for i, s in enumerate(stages):
        if s.id is not None and ids.count(s.id) > 1:
            errors.append(FieldError(("stages", i, "id"), "appears more than once"))
    if errors:
        raise ValidationFailed(errors)


class PipelineService:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.session = caller.session
        self.tenant = caller.tenant
        self.events = EventSink(self.session, caller.tenant, caller.sub, caller.origin)

    async def get(self, pipeline_id: uuid.UUID, *, for_update: bool = False) -> Row:
        sql = _SELECT + " AND p.id = $2" + (" FOR UPDATE OF p" if for_update else "")
        row = await fetchrow(self.session, sql, self.tenant, pipeline_id)
        if row is None:
            raise PipelineNotFound(pipeline_id)
        return _pipeline(row)

    async def search(
        self, sort: Sort, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        args: list[Any] = [self.tenant]
        sql = _SELECT
        after = sort.after(cursor)
        if after is not None:
            sql += " AND " + sort.clause("p", 2)
            args += list(after)
        args.append(limit + 1)
        sql += f" ORDER BY {sort.order_by('p')} LIMIT ${len(args)}"
        rows = [_pipeline(r) for r in await fetch(self.session, sql, *args)]
        return sort.page(rows, limit)

    async def create(self, body: PipelineIn) -> Row:
        self.caller.require_admin()
        errors = []
        if body.name is None:
            errors.append(FieldError(("name",), "is required"))
        if body.stages is None:
            errors.append(FieldError(("stages",), "is required"))
        if errors:
            raise ValidationFailed(errors)
        assert body.stages is not None
        for i, s in enumerate(body.stages):
            if s.id is not None:
                errors.append(
                    FieldError(("stages", i, "id"), "a new pipeline's stages get new ids")
                )
        if errors:
            raise ValidationFailed(errors)
        check_stages(body.stages)
        ts = now()
        row: Row = {
            "id": uuid.uuid4(),
            "name": body.name,
            "stages": [_stage(uuid.uuid4(), i, s) for i, s in enumerate(body.stages)],
            "created_at": ts,
            "updated_at": ts,
            "version": 1,
        }
        await execute(
            self.session,
            "INSERT INTO pipelines (tenant_id, id, name, created_at, updated_at, version) "
            "VALUES ($1, $2, $3, $4, $5, 1)",
            self.tenant,
            row["id"],
            row["name"],
            ts,
            ts,
        )
        await self._insert_stages(row["id"], row["stages"])
        self.events.pipeline_created(row)
        return row

    async def _insert_stages(self, pipeline_id: uuid.UUID, stages: list[Row]) -> None:
        await executemany(
            self.session,
            "INSERT INTO stages (tenant_id, id, pipeline_id, name, position, probability, "
            "forecast_category, is_won, is_lost) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [(self.tenant, s["id"], pipeline_id, *(s[f] for f in STAGE_FIELDS)) for s in stages],
        )

    async def _deal_counts(self, stage_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        rows = await fetch(
            self.session,
            "SELECT stage_id, count(*) AS n FROM deals WHERE tenant_id = $1 "
            "AND stage_id = ANY($2::uuid[]) AND deleted_at IS NULL GROUP BY stage_id",
            self.tenant,
            stage_ids,
        )
        return {r["stage_id"]: r["n"] for r in rows}

    async def update(self, pipeline_id: uuid.UUID, body: PipelineIn, if_match: str | None) -> Row:
        self.caller.require_admin()
        old = await self.get(pipeline_id, for_update=True)
        check_if_match(if_match, old["version"])
        new = dict(old)
        fields = body.model_fields_set
        changed: list[str] = []
        if "name" in fields:
            if body.name is None:
                raise ValidationFailed([FieldError(("name",), "cannot be null")])
            new["name"] = body.name
            if new["name"] != old["name"]:
                changed.append("name")
        added: list[Row] = []
        kept: list[Row] = []
        removed: list[uuid.UUID] = []
        if "stages" in fields:
            if body.stages is None:
                raise ValidationFailed([FieldError(("stages",), "cannot be null")])
            check_stages(body.stages)
            current = {s["id"]: s for s in old["stages"]}
            errors = [
                FieldError(("stages", i, "id"), "is not a stage of this pipeline")
                for i, s in enumerate(body.stages)
                if s.id is not None and s.id not in current
            ]
            if errors:
                raise ValidationFailed(errors)
            stages = []
            for i, s in enumerate(body.stages):
                stage = _stage(s.id or uuid.uuid4(), i, s)
                (kept if s.id is not None else added).append(stage)
                stages.append(stage)
            keep_ids = {s["id"] for s in kept}
            removed = [sid for sid in current if sid not in keep_ids]
            if removed:
                counts = await self._deal_counts(removed)
                if counts:
                    busy = sorted(str(k) for k in counts)
                    raise Conflict(
                        f"stages {', '.join(busy)} still hold {sum(counts.values())} deals; "
                        "move them first",
                        stage_ids=busy,
                    )
            new["stages"] = stages
            if stages != old["stages"]:
                changed.append("stages")
            # A won/lost flag may not move to another stage while closed deals sit in the
            # old one (their status would contradict their stage).
            flips = [
                s["id"]
                for s in kept
                if (s["is_won"], s["is_lost"])
                != (current[s["id"]]["is_won"], current[s["id"]]["is_lost"])
            ]
            if flips and await self._deal_counts(flips):
                raise Conflict("cannot change is_won/is_lost of a stage that holds deals")
        if not changed:
            return old
        new.update(version=old["version"] + 1, updated_at=now())
        await execute(
            self.session,
            "UPDATE pipelines SET name = $3, updated_at = $4, version = $5 "
            "WHERE tenant_id = $1 AND id = $2",
            self.tenant,
            pipeline_id,
            new["name"],
            new["updated_at"],
            new["version"],
        )
        if removed:
            await execute(
                self.session,
                "UPDATE stages SET deleted_at = $3 WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
                self.tenant,
                removed,
                new["updated_at"],
            )
        await executemany(
            self.session,
            "UPDATE stages SET name = $3, position = $4, probability = $5, forecast_category = $6, "
            "is_won = $7, is_lost = $8 WHERE tenant_id = $1 AND id = $2",
            [(self.tenant, s["id"], *(s[f] for f in STAGE_FIELDS)) for s in kept],
        )
        await self._insert_stages(pipeline_id, added)
        self.events.pipeline_updated(new, changed)
        return new

    async def delete(self, pipeline_id: uuid.UUID, if_match: str | None) -> None:
        self.caller.require_admin()
        row = await self.get(pipeline_id, for_update=True)
        check_if_match(if_match, row["version"])
        n = await fetchrow(
            self.session,
            "SELECT count(*) AS n FROM deals WHERE tenant_id = $1 AND pipeline_id = $2 "
            "AND deleted_at IS NULL",
            self.tenant,
            pipeline_id,
        )
        if n and n["n"]:
            raise Conflict(
                f"pipeline {pipeline_id} still has {n['n']} deals; move or delete them first",
                deals=n["n"],
            )
        ts = now()
        row.update(version=row["version"] + 1, updated_at=ts)
        await execute(
            self.session,
            "UPDATE pipelines SET deleted_at = $3, updated_at = $3, version = $4 "
            "WHERE tenant_id = $1 AND id = $2",
            self.tenant,
            pipeline_id,
            ts,
            row["version"],
        )
        await execute(
            self.session,
            "UPDATE stages SET deleted_at = $3 WHERE tenant_id = $1 AND pipeline_id = $2 "
            "AND deleted_at IS NULL",
            self.tenant,
            pipeline_id,
            ts,
        )
        self.events.pipeline_deleted(row)


def _stage(stage_id: uuid.UUID, position: int, s: StageIn) -> Row:
    return {
        "id": stage_id,
        "name": s.name,
        "position": position,
        "probability": s.probability,
        "forecast_category": s.forecast_category,
        "is_won": s.is_won,
        "is_lost": s.is_lost,
    }
