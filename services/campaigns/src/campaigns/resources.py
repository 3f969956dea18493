"""Shared CRUD plumbing of the versioned resources (templates, campaigns, programs, models,
sequences): read with tenant scope, write with version bump and exactly one event, keyset
pages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns.common import Actor, ResourceNotFound, Row, emit, one, rows
from chassis.http import decode_cursor, encode_cursor
from chassis.problems import invalid


class Table:
    def __init__(
        self,
        name: str,
        kind: str,
        columns: Sequence[str],
        event: Callable[[str, Row], Message],
        json_columns: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.kind = kind
        self.columns = tuple(columns)
        self.event = event
        self.json_columns = set(json_columns)

    async def get(
        self, session: AsyncSession, tenant: str, rid: uuid.UUID, *, lock: bool = False
    ) -> Row:
        row = await one(
            session,
            f"SELECT * FROM {self.name} WHERE tenant_id = :t AND id = :i AND deleted_at IS NULL"
            + (" FOR UPDATE" if lock else ""),
            {"t": tenant, "i": rid},
        )
        if row is None:
            raise ResourceNotFound(self.kind, rid)
        return row

    async def save(
        self,
        session: AsyncSession,
        actor: Actor,
        row: Row,
        change: str,
        changed: list[str] | None = None,
    ) -> Row:
        """Insert or overwrite `row` (its version already set) and emit its one event."""
        cols = [
            "tenant_id",
            "id",
            *self.columns,
            "created_at",
            "updated_at",
            "version",
            "deleted_at",
        ]
        values = ", ".join(
            f"CAST(:{c} AS jsonb)" if c in self.json_columns else f":{c}" for c in cols
        )
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[2:] if c != "created_at")
        params = {c: row.get(c) for c in cols}
        for c in self.json_columns:
            params[c] = json.dumps(params[c])
        saved = await one(
            session,
            f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES ({values}) "
            f"ON CONFLICT (tenant_id, id) DO UPDATE SET {updates} RETURNING *",
            params,
        )
        assert saved is not None
        emit(session, actor, self.event(change, saved), saved["id"], saved["version"], changed)
        return saved

    async def page(
        self,
        session: AsyncSession,
        tenant: str,
        limit: int,
        cursor: str | None,
        where: str = "",
        params: dict[str, Any] | None = None,
    ) -> tuple[list[Row], str | None]:
        decoded = decode_cursor(cursor)
        after = None
        if decoded is not None:
            try:
                after = uuid.UUID(str(decoded.get("id")))
            except ValueError as e:
                raise invalid("cursor", "not a cursor returned by this API") from e
        found = await rows(
            session,
            f"SELECT * FROM {self.name} WHERE tenant_id = :t AND deleted_at IS NULL {where} "
            "AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid)) ORDER BY id LIMIT :n",
            {**(params or {}), "t": tenant, "after": after, "n": limit + 1},
        )
        nxt = encode_cursor({"id": str(found[limit - 1]["id"])}) if len(found) > limit else None
        return found[:limit], nxt
