"""The tenant's sales org (a replica of the pipeline service's teams) and plan assignments,
loaded once per unit of work: who manages whom, and which plan governs a user when."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from commissions.calc import Spiff, Terms, Tier


@dataclass
class Org:
    parent: dict[str, str | None] = field(default_factory=dict)
    members: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    async def load(cls, conn: Any, tenant: str) -> Org:
        org = cls()
        for r in await conn.fetch("SELECT id, parent_id FROM teams WHERE tenant_id = $1", tenant):
            org.parent[str(r["id"])] = None if r["parent_id"] is None else str(r["parent_id"])
        for r in await conn.fetch(
            "SELECT team_id, user_id, role FROM team_members WHERE tenant_id = $1", tenant
        ):
            org.members[str(r["team_id"])].append((r["user_id"], r["role"]))
        return org

    def children(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for team, parent in self.parent.items():
            if parent is not None:
                out[parent].append(team)
        return out

    def with_descendants(self, teams: set[str]) -> set[str]:
        kids = self.children()
        seen: set[str] = set()
        stack = [t for t in teams if t in self.parent]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            stack.extend(kids.get(t, ()))
        return seen

    def with_ancestors(self, teams: set[str]) -> set[str]:
        seen: set[str] = set()
        for t in teams:
            cur: str | None = t
            while cur is not None and cur not in seen and cur in self.parent:
                seen.add(cur)
                cur = self.parent.get(cur)
        return seen

    def teams_of(self, user: str) -> set[str]:
        return {t for t, ms in self.members.items() if any(u == user for u, _ in ms)}

    def managed_teams(self, user: str, extra: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
        """Teams `user` manages (in the replica, or named in their token), with sub-teams."""
        direct = {t for t, ms in self.members.items() if (user, "manager") in ms}
        return self.with_descendants(direct | set(extra))

    def users_of(self, teams: set[str]) -> set[str]:
        return {u for t in teams for u, _ in self.members.get(t, ())}


@dataclass(frozen=True)
class Assignment:
    id: str
    plan_id: str
    user_id: str | None
    team_id: str | None
    effective_from: date
    effective_to: date | None
    created_at: datetime


@dataclass
class Plan:
    id: str
    name: str
    period: str
    currency: str
    versions: list[Terms]


def terms_from_json(number: int, effective_from: date, raw: dict[str, Any]) -> Terms:
    return Terms(
        version=number,
        effective_from=effective_from,
        period=raw["period"],
        currency=raw["currency"],
        credit_on=raw["credit_on"],
        tier_basis=raw["tier_basis"],
        tier_mode=raw["tier_mode"],
        tiers=tuple(
            Tier(
                Decimal(t["from"]),
                None if t["to"] is None else Decimal(t["to"]),
                Decimal(t["rate"]),
            )
            for t in raw["tiers"]
        ),
        cap=None if raw.get("cap") is None else Decimal(raw["cap"]),
        spiffs=tuple(
            Spiff(s["product"], Decimal(s["amount_per_unit"])) for s in raw.get("spiffs", [])
        ),
        clawback_days=int(raw.get("clawback_days", 0)),
    )


@dataclass
class Book:
    """Plans, their versions and assignments of a tenant, plus the org."""

    org: Org
    plans: dict[str, Plan]
    assignments: list[Assignment]

    @classmethod
    async def load(cls, conn: Any, tenant: str) -> Book:
        org = await Org.load(conn, tenant)
        plans: dict[str, Plan] = {}
        for r in await conn.fetch(
            "SELECT id, name, period, currency FROM plans WHERE tenant_id = $1", tenant
        ):
            plans[str(r["id"])] = Plan(str(r["id"]), r["name"], r["period"], r["currency"], [])
        for r in await conn.fetch(
            "SELECT plan_id, number, effective_from, terms::text AS terms FROM plan_versions "
            "WHERE tenant_id = $1 ORDER BY plan_id, number",
            tenant,
        ):
            # Each statement sees its own snapshot: a plan committed after the first one is
            # not in `plans`, and is left, versions and all, to the next load.
            plan = plans.get(str(r["plan_id"]))
            if plan is not None:
                plan.versions.append(
                    terms_from_json(r["number"], r["effective_from"], json.loads(r["terms"]))
                )
        assignments = [
            Assignment(
                str(r["id"]),
                str(r["plan_id"]),
                r["user_id"],
                None if r["team_id"] is None else str(r["team_id"]),
                r["effective_from"],
                r["effective_to"],
                r["created_at"],
            )
            for r in await conn.fetch(
                "SELECT id, plan_id, user_id, team_id, effective_from, effective_to, created_at "
                "FROM plan_assignments WHERE tenant_id = $1",
                tenant,
            )
        ]
        return cls(org, plans, assignments)

    def plan_for(self, user: str, start: date, end: date) -> Plan | None:
        """The plan governing `user` over [start, end]: among the assignments overlapping it,
        a user's own beats a team's (the user's teams and their parents), then the latest
        effective_from, then the latest created."""
        teams = self.org.with_ancestors(self.org.teams_of(user))
        best: tuple[tuple[bool, date, datetime, str], Assignment] | None = None
        for a in self.assignments:
            if a.user_id != user and (a.team_id is None or a.team_id not in teams):
                continue
            if a.effective_from > end or (a.effective_to is not None and a.effective_to < start):
                continue
            rank = (a.user_id is not None, a.effective_from, a.created_at, a.id)
            if best is None or rank > best[0]:
                best = (rank, a)
        return None if best is None else self.plans.get(best[1].plan_id)

    def users_assigned(self, plan_id: str | None = None) -> set[str]:
        users: set[str] = set()
        teams: set[str] = set()
        for a in self.assignments:
            if plan_id is not None and a.plan_id != plan_id:
                continue
            if a.user_id is not None:
                users.add(a.user_id)
            elif a.team_id is not None:
                teams.add(a.team_id)
        return users | self.org.users_of(self.org.with_descendants(teams))


def new_id() -> uuid.UUID:
    return uuid.uuid4()
