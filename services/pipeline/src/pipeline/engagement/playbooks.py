"""Playbooks: enablement content (markdown, tags, attachment URLs) shown for the stages it
lists. Anyone in the tenant reads; admins and sales managers write. The event contract has no
playbook events, so writes only bump the version (for ETags)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.http import check_if_match
from chassis.problems import NotFound, invalid
from pipeline.engagement import repository as repo
from pipeline.engagement.caller import (
    Caller,
    cursor_id,
    cursor_time,
    page_cursor,
    read_cursor,
    utcnow,
)
from pipeline.engagement.schemas import PlaybookIn

Row = dict[str, Any]


class PlaybookNotFound(NotFound):
    def __init__(self, playbook_id: uuid.UUID) -> None:
        super().__init__(f"playbook {playbook_id} not found")


class DealNotFound(NotFound):
    def __init__(self, deal_id: uuid.UUID) -> None:
        super().__init__(f"deal {deal_id} not found")


def _clean(body: PlaybookIn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in body.model_dump(exclude_unset=True).items():
        if name == "title" and value is None:
            raise invalid("title", "may not be null")
        if name == "body":
            value = value or ""
        elif name == "stage_ids" or name == "tags":
            value = list(dict.fromkeys(value or []))
        elif name == "attachments":
            value = [str(u) for u in value or []]
        out[name] = value
    return out


class PlaybookService:
    def __init__(self, session: AsyncSession, caller: Caller) -> None:
        self.session = session
        self.caller = caller

    async def _check_stages(self, stage_ids: list[uuid.UUID]) -> None:
        known = await repo.existing_stage_ids(self.session, self.caller.tenant, stage_ids)
        for i, stage_id in enumerate(stage_ids):
            if stage_id not in known:
                raise invalid(["stage_ids", i], "no such stage")

    async def create(self, body: PlaybookIn) -> Row:
        if body.title is None:
            raise invalid("title", "Field required")
        values = _clean(body)
        await self._check_stages(values.get("stage_ids", []))
        now = utcnow()
        row = {
            "tenant_id": self.caller.tenant,
            "id": uuid.uuid4(),
            "title": values["title"],
            "body": values.get("body", ""),
            "stage_ids": values.get("stage_ids", []),
            "tags": values.get("tags", []),
            "attachments": values.get("attachments", []),
            "created_by": self.caller.sub,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        return await repo.insert(self.session, "playbooks", row)

    async def get(self, playbook_id: uuid.UUID, *, for_update: bool = False) -> Row:
        row = await repo.get(
            self.session, "playbooks", self.caller.tenant, playbook_id, for_update=for_update
        )
        if row is None:
            raise PlaybookNotFound(playbook_id)
        return row

    async def update(self, playbook_id: uuid.UUID, body: PlaybookIn, if_match: str | None) -> Row:
        row = await self.get(playbook_id, for_update=True)
        check_if_match(if_match, row["version"])
        values = _clean(body)
        if "stage_ids" in values:
            await self._check_stages(values["stage_ids"])
        changed = {c: v for c, v in values.items() if v != row[c]}
        if not changed:
            return row
        changed |= {"updated_at": utcnow(), "version": row["version"] + 1}
        return await repo.update(self.session, "playbooks", self.caller.tenant, row["id"], changed)

    async def delete(self, playbook_id: uuid.UUID, if_match: str | None) -> None:
        row = await self.get(playbook_id, for_update=True)
        check_if_match(if_match, row["version"])
        await repo.delete(self.session, "playbooks", self.caller.tenant, row["id"])

    async def page(
        self, stage_id: uuid.UUID | None, tag: str | None, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        q = repo.Query.for_tenant(self.caller.tenant)
        if stage_id is not None:
            q.where("stage_ids @> ARRAY[CAST(:stage AS uuid)]", stage=str(stage_id))
        if tag is not None:
            q.where("tags @> ARRAY[CAST(:tag AS text)]", tag=tag)
        after = read_cursor(cursor, "at", "id")
        key = (cursor_time(after["at"]), cursor_id(after["id"])) if after else None
        rows = await repo.list_playbooks(self.session, q, key, limit)
        next_cursor = page_cursor(
            rows, limit, lambda r: {"at": r["created_at"].isoformat(), "id": str(r["id"])}
        )
        return rows, next_cursor

    async def for_deal(self, deal_id: uuid.UUID) -> tuple[Row, list[Row]]:
        """The playbooks of the deal's current stage (the deal must be visible)."""
        deal = await self.caller.visible_deal(self.session, deal_id)
        if deal is None:
            raise DealNotFound(deal_id)
        rows = await repo.playbooks_for_stage(self.session, self.caller.tenant, deal["stage_id"])
        return deal, rows
