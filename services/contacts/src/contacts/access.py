"""Who may see and change what. Roles that see the whole tenant: admin, sales_manager,
marketer, support_agent, erp_sync (and service tokens). A sales_rep sees and changes only the
records they own. A partner (or a token with no known role) sees nothing and may not write.
An object the caller may not see answers 404, exactly like one that does not exist."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chassis.auth import Principal
from chassis.problems import Forbidden

TENANT_WIDE = ("admin", "sales_manager", "marketer", "support_agent", "erp_sync", "service")
WRITERS = (*TENANT_WIDE, "sales_rep")


@dataclass(frozen=True)
class Caller:
    """The principal of a request plus the origin of its writes (X-Origin, else the client)."""

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
    def sees_nothing(self) -> bool:
        return not self.sees_tenant and not self.principal.has("sales_rep")

    @property
    def owner_scope(self) -> str | None:
        """The owner_id a query must be restricted to, or None for the whole tenant."""
        return None if self.sees_tenant else self.principal.sub

    def can_see(self, row: Mapping[str, Any]) -> bool:
        if self.sees_tenant:
            return True
        return self.principal.has("sales_rep") and row.get("owner_id") == self.principal.sub

    def require_writer(self) -> None:
        if not self.principal.has(*WRITERS):
            raise Forbidden("this role may not change contacts or companies")

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise Forbidden("requires the admin role")
