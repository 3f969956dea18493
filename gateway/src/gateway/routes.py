"""The route table: which upstream service owns which `/v1/<resource>` prefix.

Adding a service is one line per resource prefix here plus its base URL in
`GatewaySettings.upstreams`. A prefix matches itself and everything below it
(`/v1/contacts`, `/v1/contacts/{id}`, `/v1/contacts/by-external-id/...`), never a longer
name (`/v1/contactsx`). Routes of an upstream that is not configured are left out, so a
deployment may run without a service.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    prefix: str
    upstream: str
    # Public routes (`/v1/public/...`: survey answers, tracking pixels, unsubscribe links) take
    # no JWT: the unguessable token in the path is the credential. The gateway drops any
    # Authorization header and charges a strict per-client-address rate limit instead.
    public: bool = False


ROUTES: tuple[Route, ...] = (
    # Two views of a contact that the campaigns service computes; listed first so they win
    # over the contacts prefix (routes are tried in this order).
    Route("/v1/contacts/{contact_id}/scores", "campaigns"),
    Route("/v1/contacts/{contact_id}/segments", "campaigns"),
    Route("/v1/contacts", "contacts"),
    Route("/v1/companies", "contacts"),
    Route("/v1/custom-fields", "contacts"),
    # pipeline
    Route("/v1/teams", "pipeline"),
    Route("/v1/pipelines", "pipeline"),
    Route("/v1/deals", "pipeline"),
    Route("/v1/orders", "pipeline"),
    Route("/v1/activities", "pipeline"),
    Route("/v1/tasks", "pipeline"),
    Route("/v1/forecast", "pipeline"),
    Route("/v1/reports/funnel", "pipeline"),
    Route("/v1/reports/sales-cycle", "pipeline"),
    Route("/v1/reports/win-rate", "pipeline"),
    Route("/v1/reports/activities", "pipeline"),
    Route("/v1/reports/average-deal-size", "pipeline"),
    Route("/v1/playbooks", "pipeline"),
    # commissions
    Route("/v1/commission-plans", "commissions"),
    Route("/v1/quotas", "commissions"),
    Route("/v1/statements", "commissions"),
    Route("/v1/periods", "commissions"),
    Route("/v1/adjustments", "commissions"),
    Route("/v1/disputes", "commissions"),
    Route("/v1/leaderboard", "commissions"),
    Route("/v1/commissions", "commissions"),
    # tickets
    Route("/v1/tickets", "tickets"),
    Route("/v1/groups", "tickets"),
    Route("/v1/business-hours", "tickets"),
    Route("/v1/sla-policies", "tickets"),
    Route("/v1/kb", "tickets"),
    Route("/v1/surveys", "tickets"),
    Route("/v1/reports/sla", "tickets"),
    Route("/v1/reports/csat", "tickets"),
    Route("/v1/reports/nps", "tickets"),
    Route("/v1/public/csat", "tickets", public=True),
    Route("/v1/public/nps", "tickets", public=True),
    # campaigns
    Route("/v1/segments", "campaigns"),
    Route("/v1/email-templates", "campaigns"),
    Route("/v1/campaigns", "campaigns"),
    Route("/v1/sequences", "campaigns"),
    Route("/v1/scoring-models", "campaigns"),
    Route("/v1/touchpoints", "campaigns"),
    Route("/v1/loyalty", "campaigns"),
    Route("/v1/public/t", "campaigns", public=True),
    Route("/v1/public/unsubscribe", "campaigns", public=True),
)


def routes_for(upstreams: dict[str, str], table: tuple[Route, ...] = ROUTES) -> list[Route]:
    """The routes whose upstream is configured."""
    return [r for r in table if r.upstream in upstreams]


def owns(route: Route, path: str) -> bool:
    return path == route.prefix or path.startswith(route.prefix + "/")
