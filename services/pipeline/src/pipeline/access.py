"""Who sees what, from the sales org (ARCHITECTURE.md: roles come from the JWT, the tree
from the `teams` and `team_members` tables).

- `admin` sees the tenant (`Scope.all`), and so do the machine roles `erp_sync` and `service`
  (sync jobs and other services act for the whole tenant).
- `sales_manager` sees their own records and those of every member of the teams they manage
  (role `manager` in `team_members`) and of all sub-teams of those teams, recursively.
- Anyone else (e.g. `sales_rep`) sees their own records only.

A record outside the caller's scope is a 404, never a 403 (no existence leak). Every list and
report filters on `Scope.owners` (`owner_id = ANY(:owners)`); `None` means no filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.auth import Principal

# The teams a user manages and all their descendants.
MANAGED_TEAMS = text("""
WITH RECURSIVE managed AS (
    SELECT team_id AS id FROM team_members
    WHERE tenant_id = :tenant AND user_id = :user AND role = 'manager'
    UNION
    SELECT t.id FROM teams t JOIN managed m ON t.parent_id = m.id
    WHERE t.tenant_id = :tenant
)
SELECT id FROM managed
""")

TEAM_MEMBERS = text("""
SELECT DISTINCT user_id FROM team_members
WHERE tenant_id = :tenant AND team_id = ANY(CAST(:teams AS uuid[]))
""")

# A team and all its descendants.
SUBTREE = text("""
WITH RECURSIVE tree AS (
    SELECT id FROM teams WHERE tenant_id = :tenant AND id = CAST(:team AS uuid)
    UNION
    SELECT t.id FROM teams t JOIN tree ON t.parent_id = tree.id WHERE t.tenant_id = :tenant
)
SELECT id FROM tree
""")


@dataclass(frozen=True)
class Scope:
    """What a caller may see: `owners` None = the whole tenant."""

    tenant: str
    user: str
    owners: frozenset[str] | None
    managed_teams: frozenset[str]

    @property
    def is_all(self) -> bool:
        return self.owners is None

    def sees(self, owner_id: str | None) -> bool:
        return self.owners is None or (owner_id is not None and owner_id in self.owners)

    def owner_list(self) -> list[str] | None:
        """For SQL: `(:owners IS NULL OR owner_id = ANY(:owners))`."""
        return None if self.owners is None else sorted(self.owners)


async def managed_teams(session: AsyncSession, tenant: str, user: str) -> frozenset[str]:
    rows = await session.execute(MANAGED_TEAMS, {"tenant": tenant, "user": user})
    return frozenset(str(r[0]) for r in rows)


async def team_subtree(session: AsyncSession, tenant: str, team_id: str) -> list[str]:
    """The team and all its descendants (empty when the team does not exist)."""
    rows = await session.execute(SUBTREE, {"tenant": tenant, "team": team_id})
    return [str(r[0]) for r in rows]


async def members_of(session: AsyncSession, tenant: str, team_ids: list[str]) -> set[str]:
    if not team_ids:
        return set()
    rows = await session.execute(TEAM_MEMBERS, {"tenant": tenant, "teams": team_ids})
    return {str(r[0]) for r in rows}


TENANT_WIDE = ("admin", "erp_sync", "service")


async def scope_of(session: AsyncSession, principal: Principal) -> Scope:
    if principal.has(*TENANT_WIDE):
        return Scope(principal.tenant, principal.sub, None, frozenset())
    if "sales_manager" in principal.roles:
        teams = await managed_teams(session, principal.tenant, principal.sub)
        owners = await members_of(session, principal.tenant, sorted(teams))
        owners.add(principal.sub)
        return Scope(principal.tenant, principal.sub, frozenset(owners), teams)
    return Scope(principal.tenant, principal.sub, frozenset({principal.sub}), frozenset())
