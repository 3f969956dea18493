"""Deal operations: reads with visibility, field writes through `DealWriter`, and the
moves that change status (won, lost, reopen) and deletion. Every move completes the deal's
open stay in `deal_stage_history` and opens the next one. Never commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chassis.http import check_if_match
from chassis.problems import Conflict, NotFound
from pipeline import money
from pipeline.core import deal_repo as repo
from pipeline.core.common import (
    DEAL_WRITERS,
    Caller,
    FieldError,
    Row,
    Sort,
    ValidationFailed,
    now,
    raise_for,
)
from pipeline.core.deal_writer import DealWrite, DealWriter, Outcome
from pipeline.core.events import EventSink, effective_category
from pipeline.core.schemas import DealIn, DealPublic, LostIn, ReopenIn, WonIn


class DealNotFound(NotFound):
    def __init__(self, deal_id: uuid.UUID) -> None:
        super().__init__(f"deal {deal_id} not found")


class DealNotOpen(Conflict):
    def __init__(self, deal_id: uuid.UUID, status: str) -> None:
        super().__init__(f"deal {deal_id} is {status}; reopen it first", status=status)


def deal_public(row: Row) -> DealPublic:
    data = {k: row.get(k) for k in DealPublic.model_fields if k in row}
    data["amount"] = money.format_amount(row["amount"], row["currency"])
    data["effective_forecast_category"] = effective_category(row)
    return DealPublic.model_validate(data)


def _closed_at(value: datetime | None, field: str = "closed_at") -> datetime:
    at = now()
    if value is None:
        return at
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value > at:
        raise ValidationFailed([FieldError((field,), "must not be in the future")])
    return value


class DealService:
    def __init__(self, caller: Caller, batch_max_items: int = 1000) -> None:
        self.caller = caller
        self.session = caller.session
        self.tenant = caller.tenant
        self.events = EventSink(self.session, caller.tenant, caller.sub, caller.origin)
        self.batch_max_items = batch_max_items

    async def _writer(self) -> DealWriter:
        return DealWriter(self.caller, await self.caller.scope(), self.events)

    # -- reads -------------------------------------------------------------------------------

    async def visible(self, deal_id: uuid.UUID, *, for_update: bool = False) -> Row:
        rows = await repo.get_deals(self.session, self.tenant, [deal_id], for_update=for_update)
        scope = await self.caller.scope()
        if not rows or rows[0]["deleted_at"] is not None or not scope.sees(rows[0]["owner_id"]):
            raise DealNotFound(deal_id)
        return rows[0]

    async def search(
        self, f: repo.DealFilter, sort: Sort, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        after = sort.after(cursor)
        scope = await self.caller.scope()
        rows = await repo.list_deals(
            self.session, self.tenant, scope.owner_list(), f, sort, after, limit
        )
        return sort.page(rows, limit)

    async def history(self, deal_id: uuid.UUID) -> list[Row]:
        await self.visible(deal_id)
        return await repo.history(self.session, self.tenant, deal_id)

    # -- field writes ------------------------------------------------------------------------

    def _require_writer(self) -> None:
        self.caller.require(DEAL_WRITERS, "deals")

    async def _single(
        self, write: DealWrite, locked: dict[uuid.UUID, Row] | None = None
    ) -> Outcome:
        writer = await self._writer()
        [outcome] = await writer.apply([write], locked)
        if outcome.status == "error":
            raise_for(outcome.kind, outcome.errors, "deal")
        assert outcome.row is not None
        return outcome

    async def create(self, body: DealIn) -> Row:
        self._require_writer()
        outcome = await self._single(
            DealWrite(0, body, set(body.model_fields_set), create_only=True)
        )
        assert outcome.row is not None
        return outcome.row

    async def update(self, deal_id: uuid.UUID, body: DealIn, if_match: str | None) -> Row:
        self._require_writer()
        row = await self.visible(deal_id, for_update=True)
        check_if_match(if_match, row["version"])
        outcome = await self._single(
            DealWrite(0, body, set(body.model_fields_set), target_id=deal_id), {deal_id: row}
        )
        assert outcome.row is not None
        return outcome.row

    async def upsert_by_external_id(
        self, system: str, external_id: str, body: DealIn, if_match: str | None
    ) -> tuple[Row, bool]:
        self._require_writer()
        write = DealWrite(
            0, body, set(body.model_fields_set), key=(system, external_id), if_match=if_match
        )
        outcome = await self._single(write)
        assert outcome.row is not None
        return outcome.row, outcome.status == "created"

    async def batch(self, items: Sequence[Any]) -> list[Outcome]:
        self._require_writer()
        if len(items) > self.batch_max_items:
            raise ValidationFailed(
                [FieldError(("items",), f"at most {self.batch_max_items} items per batch")]
            )
        writer = await self._writer()
        return await writer.apply([DealWrite.parse(i, item) for i, item in enumerate(items)])

    # -- moves -------------------------------------------------------------------------------

    async def _catalog(self, row: Row) -> repo.Catalog:
        return await repo.load_catalog(self.session, self.tenant, [row["pipeline_id"]])

    async def _move(self, old: Row, new: Row, stage: Row, at: datetime) -> None:
        """Write a deal that entered `stage` at `at`, with its stage history."""
        new.update(
            stage_id=stage["id"],
            stage_name=stage["name"],
            stage_forecast_category=stage["forecast_category"],
            forecast_category=None,  # a stage move resets the override to the stage default
            version=old["version"] + 1,
            updated_at=now(),
        )
        await repo.update_deals(self.session, [new])
        await repo.close_history(self.session, self.tenant, [(old["id"], at, stage["id"])])
        await repo.insert_history(
            self.session,
            [
                {
                    "tenant_id": self.tenant,
                    "deal_id": old["id"],
                    "pipeline_id": old["pipeline_id"],
                    "stage_id": stage["id"],
                    "from_stage_id": old["stage_id"],
                    "entered_at": at,
                    "entered_by": self.caller.sub,
                    "amount": new["amount"],
                    "currency": new["currency"],
                }
            ],
        )

    async def _close(
        self,
        deal_id: uuid.UUID,
        status: str,
        closed_at: datetime | None,
        lost_reason: str | None,
        if_match: str | None,
    ) -> tuple[Row, Row]:
        """Move an open deal into its pipeline's won or lost stage."""
        self._require_writer()
        old = await self.visible(deal_id, for_update=True)
        if if_match is not None:
            check_if_match(if_match, old["version"])
        at = _closed_at(closed_at)
        if old["status"] != "open":
            raise DealNotOpen(deal_id, old["status"])
        info = (await self._catalog(old)).pipelines[old["pipeline_id"]]
        stage = info.won() if status == "won" else info.lost()
        assert stage is not None  # every pipeline has exactly one of each
        new = dict(old)
        new.update(status=status, closed_at=at, lost_reason=lost_reason or None)
        await self._move(old, new, stage, at)
        return old, new

    async def won(self, deal_id: uuid.UUID, body: WonIn, if_match: str | None) -> Row:
        old, new = await self._close(deal_id, "won", body.closed_at, None, if_match)
        self.events.deal_won(new, old["stage_id"])
        return new

    async def lost(self, deal_id: uuid.UUID, body: LostIn, if_match: str | None) -> Row:
        old, new = await self._close(deal_id, "lost", body.closed_at, body.lost_reason, if_match)
        self.events.deal_lost(new, old["stage_id"])
        return new

    async def reopen(self, deal_id: uuid.UUID, body: ReopenIn, if_match: str | None) -> Row:
        self._require_writer()
        old = await self.visible(deal_id, for_update=True)
        if if_match is not None:
            check_if_match(if_match, old["version"])
        if old["status"] == "open":
            raise Conflict(f"deal {deal_id} is already open")
        info = (await self._catalog(old)).pipelines[old["pipeline_id"]]
        live = {s["id"]: s for s in info.stages}
        stage: Row | None
        if body.stage_id is not None:
            stage = live.get(body.stage_id)
            if stage is None or stage["is_won"] or stage["is_lost"]:
                raise ValidationFailed(
                    [FieldError(("stage_id",), f"is not an open stage of pipeline {info.id}")]
                )
        else:
            before = await repo.stage_before_close(self.session, self.tenant, deal_id)
            stage = live.get(before) if before is not None else None
            if stage is None or stage["is_won"] or stage["is_lost"]:
                stage = info.first_open()
            assert stage is not None
        new = dict(old)
        new.update(status="open", closed_at=None, lost_reason=None)
        await self._move(old, new, stage, now())
        self.events.deal_reopened(new, old["status"], old["closed_at"])
        return new

    async def delete(self, deal_id: uuid.UUID, if_match: str | None) -> None:
        """Soft delete: the row stays (reports keep their history), its external ids are
        released and it disappears from every read."""
        self._require_writer()
        row = await self.visible(deal_id, for_update=True)
        check_if_match(if_match, row["version"])
        ts = now()
        row.update(deleted_at=ts, updated_at=ts, version=row["version"] + 1)
        await repo.update_deals(self.session, [row])
        await repo.remove_external_ids_of(self.session, self.tenant, deal_id)
        self.events.deal_deleted(row)
