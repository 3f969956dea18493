"""The security matrix, generated from the gateway's merged OpenAPI document: every operation
is called without a token (401), by another tenant on tenant A's objects (404, nothing
changed, nothing of A in any answer), and by every role (the documented matrix below).
Failures are collected and reported together, so one run shows the whole matrix."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

# Operations that take no bearer token: the signed token in the path is the credential, or
# the document is public by design.
UNAUTHENTICATED = {
    "GET /.well-known/jwks.json": "public signing keys",
    "GET /asyncapi.json": "the event contract partners read",
    "POST /v1/public/csat/{token}": "CSAT answer; the signed survey token is the credential",
    "POST /v1/public/nps/{token}": "NPS answer; the signed survey token is the credential",
    "GET /v1/public/t/c/{token}": "click tracking redirect (signed link)",
    "GET /v1/public/t/o/{token}": "open tracking pixel (always a GIF, records only a valid token)",
    "GET /v1/public/unsubscribe/{token}": "unsubscribe page (signed link)",
    "POST /v1/public/unsubscribe/{token}": "unsubscribe (signed link)",
}

# Roles, one letter each, in the column order of MATRIX.
ROLE_LETTERS = {
    "admin": "A",
    "sales_manager": "M",
    "sales_rep": "R",
    "marketer": "K",
    "support_agent": "S",
    "erp_sync": "E",
    "auditor": "U",  # a role no service knows
}
# What each role gets for each operation on tenant A's seeded objects (which the rep owns
# and the manager's team covers), one character per role in ROLE_LETTERS order:
#   Y  allowed: anything but 401/403/404 and 5xx (a stale If-Match is sent, so a mutation
#      that passes the checks is a 412, a 409 or a 422 and changes nothing)
#   F  forbidden: 403 problem+json (the function is not the role's)
#   N  hidden: 404 problem+json (the object is outside the role's visibility)
# Public operations are in UNAUTHENTICATED and not here.
MATRIX = {
    # contacts service: every known role writes; erase and custom-field definitions: admin
    "GET /v1/contacts": "YYYYYYY",
    "POST /v1/contacts": "YYYYYYF",
    "POST /v1/contacts/batch": "YYYYYYF",
    "PUT /v1/contacts/by-external-id/{system}/{external_id}": "YYYYYYF",
    "POST /v1/contacts/imports": "YYYYYYF",
    "GET /v1/contacts/imports/{job_id}": "YYYYYYN",
    "GET /v1/contacts/{contact_id}": "YYYYYYN",
    "PATCH /v1/contacts/{contact_id}": "YYYYYYF",
    "DELETE /v1/contacts/{contact_id}": "YYYYYYF",
    "GET /v1/contacts/{contact_id}/duplicates": "YYYYYYN",
    "POST /v1/contacts/{contact_id}/erase": "YFFFFFF",
    "POST /v1/contacts/{contact_id}/merge": "YYYYYYF",
    "GET /v1/companies": "YYYYYYY",
    "POST /v1/companies": "YYYYYYF",
    "PUT /v1/companies/by-external-id/{system}/{external_id}": "YYYYYYF",
    "GET /v1/companies/{company_id}": "YYYYYYN",
    "PATCH /v1/companies/{company_id}": "YYYYYYF",
    "DELETE /v1/companies/{company_id}": "YYYYYYF",
    "GET /v1/custom-fields/{object_type}": "YYYYYYY",
    "POST /v1/custom-fields/{object_type}": "YFFFFFF",
    "GET /v1/custom-fields/{object_type}/{key}": "YYYYYYY",
    "PATCH /v1/custom-fields/{object_type}/{key}": "YFFFFFF",
    "DELETE /v1/custom-fields/{object_type}/{key}": "YFFFFFF",
    # pipeline: org and pipelines admin-written; deals for the sales roles and erp_sync
    "GET /v1/teams": "YYYYYYY",
    "POST /v1/teams": "YFFFFFF",
    "GET /v1/teams/{team_id}": "YYYYYYY",
    "PATCH /v1/teams/{team_id}": "YFFFFFF",
    "DELETE /v1/teams/{team_id}": "YFFFFFF",
    "PUT /v1/teams/{team_id}/members/{user_id}": "YFFFFFF",
    "DELETE /v1/teams/{team_id}/members/{user_id}": "YFFFFFF",
    "GET /v1/pipelines": "YYYYYYY",
    "POST /v1/pipelines": "YFFFFFF",
    "GET /v1/pipelines/{pipeline_id}": "YYYYYYY",
    "PATCH /v1/pipelines/{pipeline_id}": "YFFFFFF",
    "DELETE /v1/pipelines/{pipeline_id}": "YFFFFFF",
    "GET /v1/deals": "YYYYYYY",
    "POST /v1/deals": "YYYFFYF",
    "POST /v1/deals/batch": "YYYFFYF",
    "PUT /v1/deals/by-external-id/{system}/{external_id}": "YYYFFYF",
    "GET /v1/deals/{deal_id}": "YYYNNYN",
    "PATCH /v1/deals/{deal_id}": "YYYFFYF",
    "DELETE /v1/deals/{deal_id}": "YYYFFYF",
    "POST /v1/deals/{deal_id}/won": "YYYFFYF",
    "POST /v1/deals/{deal_id}/lost": "YYYFFYF",
    "POST /v1/deals/{deal_id}/reopen": "YYYFFYF",
    "GET /v1/deals/{deal_id}/stage-history": "YYYNNYN",
    "GET /v1/deals/{deal_id}/playbook": "YYYNNYN",
    "GET /v1/orders": "YYYYYYY",
    "POST /v1/orders/batch": "YFFFFYF",
    "PUT /v1/orders/by-external-id/{system}/{external_id}": "YFFFFYF",
    "GET /v1/orders/{order_id}": "YYYNNYN",
    "GET /v1/activities": "YYYYYYY",
    "POST /v1/activities": "YYYYYYY",
    "GET /v1/activities/{activity_id}": "YYYNNYN",
    "PATCH /v1/activities/{activity_id}": "YYYNNYN",
    "DELETE /v1/activities/{activity_id}": "YYYNNYN",
    "GET /v1/tasks": "YYYYYYY",
    "POST /v1/tasks": "YYYYYYY",
    "GET /v1/tasks/{task_id}": "YYYNNYN",
    "PATCH /v1/tasks/{task_id}": "YYYNNYN",
    "DELETE /v1/tasks/{task_id}": "YYYNNYN",
    "GET /v1/playbooks": "YYYYYYY",
    "POST /v1/playbooks": "YYFFFFF",
    "GET /v1/playbooks/{playbook_id}": "YYYYYYY",
    "PATCH /v1/playbooks/{playbook_id}": "YYFFFFF",
    "DELETE /v1/playbooks/{playbook_id}": "YYFFFFF",
    "GET /v1/forecast": "YYYYYYY",
    "GET /v1/forecast/accuracy": "YYYYYYY",
    "GET /v1/forecast/adjustments": "YYYYYYY",
    "PUT /v1/forecast/adjustments": "YYFFFFF",
    "GET /v1/forecast/adjustments/{adjustment_id}": "YYYNNYN",
    "DELETE /v1/forecast/adjustments/{adjustment_id}": "YYFNNFN",
    "GET /v1/forecast/snapshots": "YYYYYYY",
    "POST /v1/forecast/snapshots": "YYYYYYY",
    "GET /v1/forecast/snapshots/{snapshot_id}": "YNNNNYN",
    "GET /v1/reports/activities": "YYYYYYY",
    "GET /v1/reports/average-deal-size": "YYYYYYY",
    "GET /v1/reports/funnel": "YYYYYYY",
    "GET /v1/reports/sales-cycle": "YYYYYYY",
    "GET /v1/reports/win-rate": "YYYYYYY",
    "GET /v1/changes": "YFFFFYF",
    # commissions: plans are the sales org's; statements and quotas follow the org chart
    "GET /v1/commission-plans": "YYYYYYY",
    "POST /v1/commission-plans": "YFFFFFF",
    "GET /v1/commission-plans/{plan_id}": "YYYNNNN",
    "PUT /v1/commission-plans/{plan_id}": "YFFFFFF",
    "GET /v1/commission-plans/{plan_id}/assignments": "YYYNNNN",
    "POST /v1/commission-plans/{plan_id}/assignments": "YFFFFFF",
    "GET /v1/quotas": "YYYYYYY",
    "GET /v1/quotas/{user_id}/{period}": "YYYNNNN",
    "PUT /v1/quotas/{user_id}/{period}": "YYFFFFF",
    "GET /v1/quotas/teams/{team_id}/{period}": "YYYNNNN",
    "PUT /v1/quotas/teams/{team_id}/{period}": "YYFFFFF",
    "GET /v1/statements": "YYYYYYY",
    "GET /v1/statements/{statement_id}": "YYYNNNN",
    "POST /v1/statements/{statement_id}/approve": "YYFNNNN",
    "POST /v1/statements/{statement_id}/pay": "YFFNNNN",
    "POST /v1/statements/{statement_id}/disputes": "FFYNNNN",
    "GET /v1/disputes": "YYYYYYY",
    "GET /v1/disputes/{dispute_id}": "YYYNNNN",
    "PATCH /v1/disputes/{dispute_id}": "YYFNNNN",
    "GET /v1/adjustments": "YYYYYYY",
    "POST /v1/adjustments": "YYFFFFF",
    "GET /v1/adjustments/{adjustment_id}": "YYYNNNN",
    "GET /v1/periods/{period}": "YYFFFFF",
    "POST /v1/periods/{period}/close": "YFFFFFF",
    "POST /v1/periods/{period}/recompute": "YFFFFFF",
    "GET /v1/leaderboard": "YYYYYYY",
    "GET /v1/commissions/estimate": "YYYNNNN",
    "GET /v1/commissions/audit": "YFFFFFF",
    # tickets: agents work tickets; sales roles read; configuration is admin's
    "GET /v1/tickets": "YYYYYYF",
    "POST /v1/tickets": "YFFFYYF",
    "PUT /v1/tickets/by-external-id/{system}/{external_id}": "YFFFYYF",
    "GET /v1/tickets/{ticket_id}": "YYYYYYN",
    "PATCH /v1/tickets/{ticket_id}": "YFFFYYF",
    "GET /v1/tickets/{ticket_id}/comments": "YYYYYYN",
    "POST /v1/tickets/{ticket_id}/comments": "YFFFYYF",
    "GET /v1/tickets/{ticket_id}/suggested-articles": "YYYYYYN",
    "GET /v1/groups": "YFFFYFF",
    "POST /v1/groups": "YFFFFFF",
    "GET /v1/groups/{group_id}": "YFFFYFF",
    "PATCH /v1/groups/{group_id}": "YFFFFFF",
    "DELETE /v1/groups/{group_id}": "YFFFFFF",
    "GET /v1/business-hours": "YFFFYFF",
    "POST /v1/business-hours": "YFFFFFF",
    "GET /v1/business-hours/{bh_id}": "YFFFYFF",
    "PATCH /v1/business-hours/{bh_id}": "YFFFFFF",
    "DELETE /v1/business-hours/{bh_id}": "YFFFFFF",
    "GET /v1/sla-policies": "YFFFYFF",
    "POST /v1/sla-policies": "YFFFFFF",
    "GET /v1/sla-policies/{policy_id}": "YFFFYFF",
    "PATCH /v1/sla-policies/{policy_id}": "YFFFFFF",
    "DELETE /v1/sla-policies/{policy_id}": "YFFFFFF",
    "GET /v1/kb/articles": "YYYYYYY",
    "POST /v1/kb/articles": "YFFFYFF",
    "GET /v1/kb/articles/{article_id}": "YYYYYYY",
    "PATCH /v1/kb/articles/{article_id}": "YFFFYFF",
    "DELETE /v1/kb/articles/{article_id}": "YFFFYFF",
    "GET /v1/kb/search": "YYYYYYY",
    "POST /v1/surveys/nps": "YFFYFFF",
    "GET /v1/reports/csat": "YFFFYFF",
    "GET /v1/reports/nps": "YFFFYFF",
    "GET /v1/reports/sla": "YFFFYFF",
    # campaigns: the marketer's service
    "GET /v1/segments": "YFFYFFF",
    "POST /v1/segments": "YFFYFFF",
    "POST /v1/segments/preview": "YFFYFFF",
    "GET /v1/segments/{segment_id}": "YFFYFFF",
    "PATCH /v1/segments/{segment_id}": "YFFYFFF",
    "DELETE /v1/segments/{segment_id}": "YFFYFFF",
    "GET /v1/segments/{segment_id}/count": "YFFYFFF",
    "GET /v1/segments/{segment_id}/members": "YFFYFFF",
    "POST /v1/segments/{segment_id}/members": "YFFYFFF",
    "POST /v1/segments/{segment_id}/members/remove": "YFFYFFF",
    "GET /v1/email-templates": "YFFYFFF",
    "POST /v1/email-templates": "YFFYFFF",
    "GET /v1/email-templates/{template_id}": "YFFYFFF",
    "PATCH /v1/email-templates/{template_id}": "YFFYFFF",
    "DELETE /v1/email-templates/{template_id}": "YFFYFFF",
    "POST /v1/email-templates/{template_id}/preview": "YFFYFFF",
    "GET /v1/campaigns": "YFFYFFF",
    "POST /v1/campaigns": "YFFYFFF",
    "GET /v1/campaigns/{campaign_id}": "YFFYFFF",
    "PATCH /v1/campaigns/{campaign_id}": "YFFYFFF",
    "DELETE /v1/campaigns/{campaign_id}": "YFFYFFF",
    "POST /v1/campaigns/{campaign_id}/schedule": "YFFYFFF",
    "POST /v1/campaigns/{campaign_id}/cancel": "YFFYFFF",
    "GET /v1/campaigns/{campaign_id}/deliveries": "YFFYFFF",
    "GET /v1/campaigns/{campaign_id}/report": "YFFYFFF",
    "GET /v1/sequences": "YFFYFFF",
    "POST /v1/sequences": "YFFYFFF",
    "GET /v1/sequences/{sequence_id}": "YFFYFFF",
    "PATCH /v1/sequences/{sequence_id}": "YFFYFFF",
    "DELETE /v1/sequences/{sequence_id}": "YFFYFFF",
    "GET /v1/sequences/{sequence_id}/enrollments": "YFFYFFF",
    "POST /v1/sequences/{sequence_id}/enrollments": "YFFYFFF",
    "GET /v1/scoring-models": "YFFYFFF",
    "POST /v1/scoring-models": "YFFYFFF",
    "GET /v1/scoring-models/{model_id}": "YFFYFFF",
    "PATCH /v1/scoring-models/{model_id}": "YFFYFFF",
    "DELETE /v1/scoring-models/{model_id}": "YFFYFFF",
    "GET /v1/contacts/{contact_id}/scores": "YFFYFFF",
    "GET /v1/contacts/{contact_id}/segments": "YFFYFFF",
    "GET /v1/touchpoints": "YFFYFFF",
    "POST /v1/touchpoints": "YFFYFFF",
    "GET /v1/loyalty/programs": "YFFYFFF",
    "POST /v1/loyalty/programs": "YFFYFFF",
    "GET /v1/loyalty/programs/{program_id}": "YFFYFFF",
    "PATCH /v1/loyalty/programs/{program_id}": "YFFYFFF",
    "GET /v1/loyalty/members/{contact_id}": "YFFYFFF",
    "POST /v1/loyalty/members/{contact_id}/adjust": "YFFYFFF",
    "POST /v1/loyalty/members/{contact_id}/redeem": "YFFYFFF",
    # gateway: the 360 read model, webhooks, settings, operations
    "GET /v1/customers": "YYYYYFF",
    "GET /v1/customers/{contact_id}/360": "YYYYYNN",
    "GET /v1/customers/{contact_id}/timeline": "YYYYYNN",
    "GET /v1/settings/health": "YYYYYFF",
    "PUT /v1/settings/health": "YFFFFFF",
    "GET /v1/webhooks": "YFFFFFF",
    "POST /v1/webhooks": "YFFFFFF",
    "GET /v1/webhooks/{webhook_id}": "YFFFFFF",
    "PATCH /v1/webhooks/{webhook_id}": "YFFFFFF",
    "DELETE /v1/webhooks/{webhook_id}": "YFFFFFF",
    "GET /v1/webhooks/{webhook_id}/deliveries": "YFFFFFF",
    "POST /v1/webhooks/{webhook_id}/replay": "YFFFFFF",
    "POST /v1/webhooks/{webhook_id}/rotate-secret": "YFFFFFF",
    "GET /v1/admin/gateway/dead-letters": "YFFFFFF",
    "GET /v1/admin/gateway/dead-letters/{dead_letter_id}": "NFFFFFF",
    "DELETE /v1/admin/gateway/dead-letters/{dead_letter_id}": "NFFFFFF",
    "POST /v1/admin/gateway/dead-letters/{dead_letter_id}/replay": "NFFFFFF",
}

# Cross-tenant calls on tenant A's objects that may answer 422 instead of 404, and why.
CROSS_TENANT_422 = {
    "GET /v1/loyalty/members/{contact_id}": "tenant B has no loyalty program: program_id is "
    "required before the member is looked up",
    "POST /v1/loyalty/members/{contact_id}/adjust": "as above",
    "POST /v1/loyalty/members/{contact_id}/redeem": "as above",
}

# Cross-tenant writes whose path holds an id of A's but which create B's own row.
CROSS_TENANT_OWN_WRITE = {
    "PUT /v1/quotas/teams/{team_id}/{period}": "an upsert keyed by (tenant, team id, period): "
    "commissions does not require the team in its org replica (which may lag the pipeline's "
    "team.created event), so B gets a quota of its own for that id; A's quota is unchanged",
}

# Visibility: (role, sub, method, path, expected). The seeded objects are owned by u-rep1
# (a member of u-mgr's team); the foreign ones by u-rep2 (in no team): the rep and the
# manager see the first kind and get 404 for the second. Each 404 has a 200 control.
VISIBILITY: list[tuple[str, str, str, str, int]] = [
    ("sales_rep", "u-rep1", "GET", "/v1/contacts/{contact}", 200),
    ("sales_rep", "u-rep1", "GET", "/v1/contacts/{foreign_contact}", 404),
    ("sales_rep", "u-rep1", "PATCH", "/v1/contacts/{foreign_contact}", 404),
    ("sales_rep", "u-rep1", "GET", "/v1/customers/{contact}/360", 200),
    ("sales_rep", "u-rep1", "GET", "/v1/customers/{foreign_contact}/360", 404),
    ("sales_rep", "u-rep1", "GET", "/v1/customers/{foreign_contact}/timeline", 404),
    ("sales_rep", "u-rep1", "GET", "/v1/deals/{deal}", 200),
    ("sales_rep", "u-rep1", "GET", "/v1/deals/{foreign_deal}", 404),
    ("sales_rep", "u-rep1", "PATCH", "/v1/deals/{foreign_deal}", 404),
    ("sales_rep", "u-rep1", "POST", "/v1/deals/{foreign_deal}/won", 404),
    ("sales_rep", "u-rep1", "GET", "/v1/deals/{foreign_deal}/stage-history", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/deals/{deal}", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/orders/{order}", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/statements/{statement}", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/disputes/{dispute}", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/quotas/u-rep1/2026-Q4", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/activities/{activity}", 404),
    ("sales_rep", "u-rep2", "GET", "/v1/tasks/{task}", 404),
    ("sales_manager", "u-mgr", "GET", "/v1/deals/{deal}", 200),
    ("sales_manager", "u-mgr", "GET", "/v1/deals/{foreign_deal}", 404),
    ("sales_manager", "u-mgr", "GET", "/v1/statements/{statement}", 200),
    ("sales_manager", "u-other-mgr", "GET", "/v1/statements/{statement}", 404),
    ("sales_manager", "u-other-mgr", "GET", "/v1/deals/{deal}", 404),
    ("marketer", "u-mkt", "GET", "/v1/deals/{deal}", 404),
    ("support_agent", "u-agent", "GET", "/v1/tickets/{ticket}", 200),
    ("auditor", "u-unknown", "GET", "/v1/contacts/{contact}", 404),
    ("auditor", "u-unknown", "GET", "/v1/tickets/{ticket}", 404),
    ("auditor", "u-unknown", "GET", "/v1/commission-plans/{plan}", 404),
    ("erp_sync", "u-erp", "GET", "/v1/customers/{contact}/360", 404),
]

# What a role no service knows may read of tenant A (every other answer to it must hold no
# data of A's seeded objects): the tenant's shared configuration.
UNKNOWN_ROLE_READS = {
    "GET /v1/custom-fields/{object_type}",
    "GET /v1/custom-fields/{object_type}/{key}",
    "GET /v1/teams",
    "GET /v1/teams/{team_id}",
    "GET /v1/pipelines",
    "GET /v1/pipelines/{pipeline_id}",
    "GET /v1/playbooks",
    "GET /v1/playbooks/{playbook_id}",
    "GET /v1/kb/articles",
    "GET /v1/kb/articles/{article_id}",
    "GET /v1/kb/search",
}

CONCURRENCY = 8
Call = Callable[[], Awaitable[None]]


def key(op: tuple[str, str]) -> str:
    return f"{op[0]} {op[1]}"


def describe(r: httpx.Response) -> str:
    return f"{r.status_code} {r.text[:160]}"


async def bounded(calls: list[Call], limit: int = CONCURRENCY) -> None:
    """Run the calls with at most `limit` in flight (the stack runs in this one process)."""
    gate = asyncio.Semaphore(limit)

    async def run(call: Call) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(run(c) for c in calls))


def reads_first(ops: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(ops, key=lambda o: (o[0] != "GET", o))


async def without_token(client: httpx.AsyncClient, kit: Any, doc: Any, infra: Any) -> list[str]:
    """Every operation without a valid token: 401 problem+json, except the public ones."""
    failures: list[str] = []
    unknown = kit.fake_seeds()
    bad_tokens = kit.invalid_credentials(infra)

    async def probe(op: tuple[str, str]) -> None:
        req = kit.build_request(doc, op, unknown)
        public = key(op) in UNAUTHENTICATED
        for label, headers in bad_tokens.items():
            res = await kit.send(client, req, headers)
            if public:
                if res.status_code == 401 or res.status_code >= 500:
                    failures.append(f"{key(op)} [{label}] is public, got {describe(res)}")
            elif res.status_code != 401 or not kit.is_problem(res):
                failures.append(f"{key(op)} [{label}] expected 401 problem, {describe(res)}")

    await bounded([functools.partial(probe, op) for op in kit.operations(doc)])
    stale = set(UNAUTHENTICATED) - {key(o) for o in kit.operations(doc)}
    failures += [f"UNAUTHENTICATED lists {op}, which the document lacks" for op in stale]
    return failures


async def smuggled_roles(client: httpx.AsyncClient, api: Any, kit: Any) -> list[str]:
    """Headers a proxy might trust never add a role or switch the tenant."""
    res = await client.post(
        "/v1/pipelines",
        json={"name": "p", "stages": kit.STAGES},
        headers={
            **api.auth("auditor"),
            "X-Roles": "admin",
            "X-User-Roles": "admin",
            "X-Tenant": kit.TENANT_B,
            "X-Forwarded-User": "u-admin",
        },
    )
    return [] if res.status_code == 403 else [f"role smuggled by headers: {describe(res)}"]


@pytest.mark.timeout(600)
class TestOutsiders:
    async def test_no_token_is_401_and_tenant_b_gets_404_and_changes_nothing(
        self, world: Any, kit: Any
    ) -> None:
        """No token: 401 on every non-public operation. Tenant B's admin on tenant A's
        objects: 404, no A data in any answer, A's objects unchanged (body and ETag)."""
        api, seeds, doc = world.api, world.seeds, world.doc
        failures = await without_token(world.client, kit, doc, api.infra)
        failures += await smuggled_roles(world.client, api, kit)
        before = await kit.settled_snapshot(api, seeds)
        b_admin = api.auth("admin", tenant=kit.TENANT_B)
        covered: set[str] = set()

        async def attack(op: tuple[str, str]) -> None:
            req = kit.build_request(doc, op, seeds, tag="b")
            res = await kit.send(world.client, req, b_admin)
            covered.add(key(op))
            if res.status_code >= 500:
                failures.append(f"{key(op)}: server error {describe(res)}")
            if kit.MARKER in res.text:
                failures.append(f"{key(op)}: tenant A's data in B's answer {describe(res)}")
            if key(op) in UNAUTHENTICATED or not kit.object_kinds(op[1]):
                return  # no tenant-A object in the path: only the leak checks apply
            if key(op) in CROSS_TENANT_OWN_WRITE:
                return  # B writes its own row; the snapshot shows A's is untouched
            expected = {404, 422} if key(op) in CROSS_TENANT_422 else {404}
            if res.status_code not in expected or not kit.is_problem(res):
                failures.append(f"{key(op)}: expected 404 problem, got {describe(res)}")

        ordered = reads_first(world.ops)
        await bounded([functools.partial(attack, op) for op in ordered if op[0] == "GET"])
        await bounded([functools.partial(attack, op) for op in ordered if op[0] != "GET"])
        after = await kit.snapshot(api, seeds)
        for kind in before:
            if before[kind] != after[kind]:
                failures.append(f"tenant A's {kind} changed: {before[kind]} -> {after[kind]}")
        assert not failures, "\n".join(sorted(failures))
        assert covered == {key(o) for o in world.ops}
        assert len(before) >= 30, f"too few seeded objects compared: {sorted(before)}"


@pytest.mark.timeout(600)
class TestRoles:
    async def test_role_matrix_and_visibility(self, world: Any, kit: Any) -> None:
        api, seeds, doc = world.api, world.seeds, world.doc
        failures: list[str] = []
        # visibility first: the matrix run below changes some objects (admin erases, ...)
        for role, sub, method, template, expected in VISIBILITY:
            path = template.format(**seeds.ids)
            res = await world.client.request(
                method,
                path,
                json={} if method != "GET" else None,
                headers={**api.auth(role, sub=sub), "If-Match": kit.STALE},
            )
            if res.status_code != expected:
                failures.append(f"visibility {role}/{sub} {method} {template}: {describe(res)}")

        documented = {k for k in MATRIX} | set(UNAUTHENTICATED)
        ops = [o for o in reads_first(world.ops) if key(o) not in UNAUTHENTICATED]
        missing = sorted(key(o) for o in ops if key(o) not in MATRIX)
        stale = sorted(documented - {key(o) for o in world.ops})
        checked: set[str] = set()

        async def check(op: tuple[str, str], role: str) -> None:
            column = list(ROLE_LETTERS).index(role)
            want = MATRIX[key(op)][column]
            req = kit.build_request(doc, op, seeds, tag=ROLE_LETTERS[role])
            res = await kit.send(world.client, req, api.auth(role))
            got = res.status_code
            ok = (
                (want == "F" and got == 403 and kit.is_problem(res))
                or (want == "N" and got == 404 and kit.is_problem(res))
                or (want == "Y" and got not in (401, 403, 404) and got < 500)
            )
            if not ok:
                failures.append(f"{key(op)} as {role}: expected {want}, got {describe(res)}")
            elif role == "auditor" and kit.MARKER in res.text and key(op) not in UNKNOWN_ROLE_READS:
                failures.append(f"{key(op)} as {role}: shows tenant A's data {describe(res)}")
            checked.add(f"{key(op)} {role}")

        others = [r for r in ROLE_LETTERS if r != "admin"]
        known = [o for o in ops if key(o) in MATRIX]
        # every other role per operation in parallel; the admin last (erase, close period)
        await bounded([functools.partial(check, op, r) for op in known for r in others])
        await bounded([functools.partial(check, op, "admin") for op in known], limit=4)

        assert not failures, f"{len(failures)} matrix failures:\n" + "\n".join(sorted(failures))
        assert not missing, f"operations without a MATRIX row: {missing}"
        assert not stale, f"MATRIX rows for operations the document lacks: {stale}"
        assert len(checked) == len(ops) * len(ROLE_LETTERS)
