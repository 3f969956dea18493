"""Who sees and does what. An admin (or a service token) sees the tenant; a sales manager
sees the users of the teams they manage, with sub-teams (from the local org replica, plus
teams named in their token) and themselves; a sales rep sees only themselves; other roles
see nothing. An invisible statement, dispute or adjustment answers 404, like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from chassis.auth import Principal
from chassis.problems import Forbidden
from commissions.org import Org

TENANT_WIDE = ("admin", "service")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    origin: str

    @property
    def tenant(self) -> str:
        return self.principal.tenant

    @property
    def sub(self) -> str:
        return self.principal.sub

    @property
    def sees_tenant(self) -> bool:
        return self.principal.has(*TENANT_WIDE)

    @property
    def is_manager(self) -> bool:
        return self.principal.has("sales_manager")

    def managed_teams(self, org: Org) -> set[str]:
        if not self.is_manager:
            return set()
        return org.managed_teams(self.sub, set(self.principal.teams))

    def managed_users(self, org: Org) -> set[str]:
        """Users this caller manages (never themselves, unless they are also in a team they
        manage as a member: a manager still cannot approve or set their own quota)."""
        return self.org_users(org, self.managed_teams(org)) - {self.sub}

    @staticmethod
    def org_users(org: Org, teams: set[str]) -> set[str]:
        return org.users_of(teams)

    def visible_users(self, org: Org) -> set[str] | None:
        """None: the whole tenant; else the users whose statements the caller may see."""
        if self.sees_tenant:
            return None
        if self.is_manager:
            return self.managed_users(org) | {self.sub}
        if self.principal.has("sales_rep"):
            return {self.sub}
        return set()

    def can_see_user(self, org: Org, user: str) -> bool:
        visible = self.visible_users(org)
        return visible is None or user in visible

    def may_manage(self, org: Org, user: str) -> bool:
        """Set the quota of, approve the statement of, or adjust the pay of `user`."""
        if self.principal.is_admin:
            return True
        return self.is_manager and user in self.managed_users(org)

    def require_admin(self, action: str) -> None:
        if not self.principal.is_admin:
            raise Forbidden(f"only an admin may {action}")

    def require_manager_role(self, action: str) -> None:
        if not (self.principal.is_admin or self.is_manager):
            raise Forbidden(f"only a sales manager or an admin may {action}")
