"""Who sees and changes what.

- `admin`, `agent`, `support_agent`: every ticket of the tenant, read and write; KB authors.
- `sales_manager`, `sales_rep`, `marketer`: read-only view of the tenant's tickets (account
  teams follow their customers' issues); they cannot comment, change or create tickets.
- `erp_sync` and `service` tokens: read and write tickets (integrations create tickets).
- Anyone else (e.g. `partner`): no ticket is visible (404), writes are 403.
- Configuration (groups, business hours, SLA policies): admin writes; agents and admins read.
- NPS surveys: admin or marketer create them; reports: agents and admins.
- Knowledge base: agents and admins write and see drafts; every other role of the tenant
  reads published articles.
An object the caller may not see answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from chassis.auth import Principal
from chassis.problems import Forbidden

AGENTS = ("admin", "agent", "support_agent")
TICKET_WRITERS = (*AGENTS, "erp_sync", "service")
TICKET_READERS = (*TICKET_WRITERS, "sales_manager", "sales_rep", "marketer")


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
    def is_agent(self) -> bool:
        return self.principal.has(*AGENTS)

    @property
    def reads_tickets(self) -> bool:
        return self.principal.has(*TICKET_READERS)

    def require_ticket_writer(self) -> None:
        if not self.principal.has(*TICKET_WRITERS):
            raise Forbidden("this role may not change tickets")

    def require_agent(self) -> None:
        if not self.is_agent:
            raise Forbidden("requires the agent, support_agent or admin role")

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise Forbidden("requires the admin role")
