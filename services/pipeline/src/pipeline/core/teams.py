"""The sales org: teams in a tree (parent_id) with members (rep or manager). Writes are
admin-only; every user of the tenant reads them. Visibility (pipeline.access) follows it."""

from __future__ import annotations

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
from pipeline.core.schemas import MemberIn, TeamIn


class TeamNotFound(NotFound):
    def __init__(self, team_id: uuid.UUID) -> None:
        super().__init__(f"team {team_id} not found")


_SELECT = """
SELECT t.id, t.name, t.parent_id, t.created_at, t.updated_at, t.version,
       COALESCE((SELECT json_agg(json_build_object('user_id', m.user_id, 'role', m.role)
                                 ORDER BY m.user_id)
                 FROM team_members m WHERE m.tenant_id = t.tenant_id AND m.team_id = t.id),
                '[]')::text AS members_json
FROM teams t WHERE t.tenant_id = $1
"""

# The ancestors of a team, the team included.
_ANCESTORS = """
WITH RECURSIVE up AS (
    SELECT id, parent_id, 0 AS depth FROM teams WHERE tenant_id = $1 AND id = $2
    UNION ALL
    SELECT t.id, t.parent_id, up.depth + 1 FROM teams t JOIN up ON t.id = up.parent_id
    WHERE t.tenant_id = $1 AND up.depth < 1000
)
SELECT id FROM up
"""


def _team(row: Row) -> Row:
    import json

    out = dict(row)
    out["members"] = json.loads(out.pop("members_json"))
    return out


def _check_members(members: list[MemberIn]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    errors: list[FieldError] = []
    for i, m in enumerate(members):
        if m.user_id in seen:
            errors.append(FieldError(("members", i, "user_id"), "appears more than once"))
        seen.add(m.user_id)
    if errors:
        raise ValidationFailed(errors)
    return sorted(({"user_id": m.user_id, "role": m.role} for m in members), key=_by_user)


def _by_user(m: dict[str, Any]) -> str:
    return str(m["user_id"])


class TeamService:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self.session = caller.session
        self.tenant = caller.tenant
        self.events = EventSink(self.session, caller.tenant, caller.sub, caller.origin)

    async def get(self, team_id: uuid.UUID, *, for_update: bool = False) -> Row:
        sql = _SELECT + " AND t.id = $2" + (" FOR UPDATE OF t" if for_update else "")
        row = await fetchrow(self.session, sql, self.tenant, team_id)
        if row is None:
            raise TeamNotFound(team_id)
        return _team(row)

    async def search(
        self, parent_id: uuid.UUID | None, sort: Sort, cursor: str | None, limit: int
    ) -> tuple[list[Row], str | None]:
        args: list[Any] = [self.tenant]
        sql = _SELECT
        if parent_id is not None:
            args.append(parent_id)
            sql += f" AND t.parent_id = ${len(args)}"
        after = sort.after(cursor)
        if after is not None:
            sql += " AND " + sort.clause("t", len(args) + 1)
            args += list(after)
        args.append(limit + 1)
        sql += f" ORDER BY {sort.order_by('t')} LIMIT ${len(args)}"
        rows = [_team(r) for r in await fetch(self.session, sql, *args)]
        return sort.page(rows, limit)

    async def _check_parent(self, team_id: uuid.UUID | None, parent_id: uuid.UUID) -> None:
        ancestors = {r["id"] for r in await fetch(self.session, _ANCESTORS, self.tenant, parent_id)}
        if not ancestors:
            raise ValidationFailed([FieldError(("parent_id",), "no such team")])
        if team_id is not None and team_id in ancestors:
            raise ValidationFailed(
                [FieldError(("parent_id",), "would make the team its own ancestor (a cycle)")]
            )

    async def _write_members(self, team_id: uuid.UUID, members: list[dict[str, Any]]) -> None:
        await execute(
            self.session,
            "DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2",
            self.tenant,
            team_id,
        )
        await executemany(
            self.session,
            "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1, $2, $3, $4)",
            [(self.tenant, team_id, m["user_id"], m["role"]) for m in members],
        )

    async def create(self, body: TeamIn) -> Row:
        self.caller.require_admin()
        if body.name is None:
            raise ValidationFailed([FieldError(("name",), "is required")])
        members = _check_members(body.members or [])
        if body.parent_id is not None:
            await self._check_parent(None, body.parent_id)
        ts = now()
        row: Row = {
            "id": uuid.uuid4(),
            "name": body.name,
            "parent_id": body.parent_id,
            "members": members,
            "created_at": ts,
            "updated_at": ts,
            "version": 1,
        }
        await execute(
            self.session,
            "INSERT INTO teams (tenant_id, id, name, parent_id, created_at, updated_at, version) "
            "VALUES ($1, $2, $3, $4, $5, $6, 1)",
            self.tenant,
            row["id"],
            row["name"],
            row["parent_id"],
            ts,
            ts,
        )
        await self._write_members(row["id"], members)
        self.events.team_created(row)
        return row

    async def update(self, team_id: uuid.UUID, body: TeamIn, if_match: str | None) -> Row:
        self.caller.require_admin()
        old = await self.get(team_id, for_update=True)
        check_if_match(if_match, old["version"])
        new = dict(old)
        fields = body.model_fields_set
        if "name" in fields:
            if body.name is None:
                raise ValidationFailed([FieldError(("name",), "cannot be null")])
            new["name"] = body.name
        if "parent_id" in fields:
            if body.parent_id is not None and body.parent_id != old["parent_id"]:
                await self._check_parent(team_id, body.parent_id)
            new["parent_id"] = body.parent_id
        if "members" in fields:
            new["members"] = _check_members(body.members or [])
        return await self._save(old, new)

    async def _save(self, old: Row, new: Row) -> Row:
        changed = [f for f in ("name", "parent_id", "members") if old[f] != new[f]]
        if not changed:
            return old
        new.update(version=old["version"] + 1, updated_at=now())
        await execute(
            self.session,
            "UPDATE teams SET name = $3, parent_id = $4, updated_at = $5, version = $6 "
            "WHERE tenant_id = $1 AND id = $2",
            self.tenant,
            new["id"],
            new["name"],
            new["parent_id"],
            new["updated_at"],
            new["version"],
        )
        if "members" in changed:
            await self._write_members(new["id"], new["members"])
        self.events.team_updated(new, changed)
        return new

    async def put_member(
        self, team_id: uuid.UUID, user_id: str, role: str, if_match: str | None
    ) -> Row:
        self.caller.require_admin()
        old = await self.get(team_id, for_update=True)
        if if_match is not None:
            check_if_match(if_match, old["version"])
        members = [m for m in old["members"] if m["user_id"] != user_id]
        members.append({"user_id": user_id, "role": role})
        return await self._save(old, {**old, "members": sorted(members, key=_by_user)})

    async def remove_member(self, team_id: uuid.UUID, user_id: str, if_match: str | None) -> Row:
        self.caller.require_admin()
        old = await self.get(team_id, for_update=True)
        if if_match is not None:
            check_if_match(if_match, old["version"])
        if not any(m["user_id"] == user_id for m in old["members"]):
            raise NotFound(f"{user_id} is not a member of team {team_id}")
        members = [m for m in old["members"] if m["user_id"] != user_id]
        return await self._save(old, {**old, "members": members})

    async def delete(self, team_id: uuid.UUID, if_match: str | None) -> None:
        self.caller.require_admin()
        row = await self.get(team_id, for_update=True)
        check_if_match(if_match, row["version"])
        children = await fetchrow(
            self.session,
            "SELECT count(*) AS n FROM teams WHERE tenant_id = $1 AND parent_id = $2",
            self.tenant,
            team_id,
        )
        if children and children["n"]:
            raise Conflict(
                f"team {team_id} has {children['n']} sub-teams; move or delete them first",
                sub_teams=children["n"],
            )
        await execute(
            self.session,
            "DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2",
            self.tenant,
            team_id,
        )
        await execute(
            self.session, "DELETE FROM teams WHERE tenant_id = $1 AND id = $2", self.tenant, team_id
        )
        row.update(version=row["version"] + 1, updated_at=now())
        self.events.team_deleted(row)
