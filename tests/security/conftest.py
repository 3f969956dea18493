"""Security-matrix support: tenant A's objects of every kind (seeded through the gateway),
and a generator that turns every operation of the merged OpenAPI document into a concrete
request (path ids filled with A's seeded objects, required query parameters, a valid body,
a stale `If-Match` so that an allowed caller is stopped before it changes anything).

The `platform` fixture (all five services + the gateway) comes from `tests/conftest.py`."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import httpx
import pytest

from chassis import devkeys
from chassis.testing import Infra, wait_for

TENANT_A = "acme"
TENANT_B = "globex"
# A string put into the names of tenant A's objects: it must never show up in an answer to
# tenant B (a generic leak detector over every response body).
MARKER = "zqxmarker"
PERIOD = "2026-Q4"
METHODS = ("get", "post", "put", "patch", "delete")
STALE = '"999999"'

# Who plays each role (sub): the rep is a member of the manager's team; `u-rep2` owns the
# "foreign" objects that neither the rep nor the manager may see.
USERS = {
    "admin": "u-admin",
    "sales_manager": "u-mgr",
    "sales_rep": "u-rep1",
    "marketer": "u-mkt",
    "support_agent": "u-agent",
    "erp_sync": "u-erp",
    "auditor": "u-unknown",  # a role no service knows
}
ROLES = tuple(USERS)

Op = tuple[str, str]  # (METHOD, path template)

STAGES = [
    {"name": "Qualify", "probability": 10, "forecast_category": "pipeline"},
    {"name": "Negotiation", "probability": 70, "forecast_category": "commit"},
    {"name": "Won", "probability": 100, "forecast_category": "closed", "is_won": True},
    {"name": "Lost", "probability": 0, "forecast_category": "omitted", "is_lost": True},
]
PLAN = {
    "name": f"AE {MARKER}",
    "period": "quarter",
    "currency": "USD",
    "effective_from": "2026-01-01",
    "credit_on": "deal_won",
    "tier_basis": "attainment",
    "tier_mode": "graduated",
    "tiers": [{"from": "0", "to": None, "rate": "0.10"}],
    "clawback_days": 90,
}
WEEKLY = {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}


def operations(doc: dict[str, Any]) -> list[Op]:
    """Every (METHOD, path) of an OpenAPI document."""
    return sorted(
        (method.upper(), path)
        for path, item in doc.get("paths", {}).items()
        for method in item
        if method in METHODS
    )


def operation(doc: dict[str, Any], op: Op) -> dict[str, Any]:
    return dict(doc["paths"][op[1]][op[0].lower()])


def is_problem(r: httpx.Response) -> bool:
    return str(r.headers.get("content-type", "")).startswith("application/problem+json")


@dataclass
class Seeds:
    """Tenant A's objects: `ids` by kind, `reads` the URLs that show each of them (compared
    before and after the attacks), `extra` other values requests need (a statement line)."""

    ids: dict[str, str] = field(default_factory=dict)
    reads: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def fake_seeds() -> Seeds:
    """Random ids for every kind: requests that reach no object (the 401 matrix)."""
    kinds = set(PATH_PARAM_KIND.values()) | set(PATH_PARAM_BY_PREFIX.values()) | {"contact2"}
    s = Seeds(ids={k: str(uuid.uuid4()) for k in kinds})
    s.extra["line_id"] = str(uuid.uuid4())
    return s


def invalid_credentials(infra: Infra) -> dict[str, dict[str, str]]:
    """Authorization headers that must all be refused (401): none, garbage, and admin tokens
    signed with the right key but for another issuer, expired, or with a tenant that is not
    a slug."""

    def bearer(**kw: Any) -> dict[str, str]:
        claims: dict[str, Any] = {"tenant": TENANT_A, "roles": ["admin"], "sub": "u-admin"}
        token = devkeys.mint_token(infra.jwt_dir, **{**claims, **kw})
        return {"Authorization": f"Bearer {token}"}

    return {
        "no token": {},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "other issuer": bearer(issuer="someone-else"),
        "expired": bearer(ttl_seconds=-120),
        "tenant not a slug": bearer(tenant="acme.>"),
    }


class Api:
    """A thin client for seeding: fails loudly with the answer when a step does not work."""

    def __init__(self, client: httpx.AsyncClient, infra: Infra) -> None:
        self.client = client
        self.infra = infra
        self._tokens: dict[tuple[str, str, str], dict[str, str]] = {}

    def auth(self, role: str, tenant: str = TENANT_A, sub: str | None = None) -> dict[str, str]:
        """A bearer token for `role` (minted once: the gateway caches verified tokens)."""
        key = (role, tenant, sub or USERS.get(role, f"u-{role}"))
        if key not in self._tokens:
            self._tokens[key] = self.infra.auth(tenant, [role], key[2])
        return self._tokens[key]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        role: str = "admin",
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> dict[str, Any]:
        h = {**self.auth(role), **(headers or {})}
        r = await self.client.request(method, path, json=body, headers=h)
        assert r.status_code in ok, f"seeding {method} {path}: {r.status_code} {r.text}"
        return dict(r.json()) if r.content else {}


async def seed(api: Api) -> Seeds:
    """One object of every kind in tenant A, visible to the rep `u-rep1` where ownership
    matters, plus `foreign_*` objects owned by `u-rep2` (outside the rep's and the
    manager's visibility)."""
    s = Seeds()
    ids, reads = s.ids, s.reads

    async def make(kind: str, path: str, body: Any, role: str = "admin") -> dict[str, Any]:
        out = await api.call("POST", path, body, role)
        ids[kind] = str(out["id"])
        reads[kind] = f"{path}/{out['id']}"
        return out

    team = await make(
        "team",
        "/v1/teams",
        {
            "name": f"East {MARKER}",
            "members": [
                {"user_id": "u-rep1", "role": "rep"},
                {"user_id": "u-mgr", "role": "manager"},
            ],
        },
    )
    pipeline = await make("pipeline", "/v1/pipelines", {"name": f"NB {MARKER}", "stages": STAGES})
    stage = pipeline["stages"][1]["id"]
    company = await make(
        "company", "/v1/companies", {"name": f"Engines {MARKER}", "owner_id": "u-rep1"}
    )
    contact = await make(
        "contact",
        "/v1/contacts",
        {
            "first_name": f"Ada {MARKER}",
            "email": "ada@acme.example",
            "owner_id": "u-rep1",
            "company_id": company["id"],
            "external_ids": {"sap": "A-1"},
        },
    )
    await make("contact2", "/v1/contacts", {"first_name": f"Dup {MARKER}", "owner_id": "u-rep1"})
    await make(
        "foreign_contact", "/v1/contacts", {"first_name": f"Other {MARKER}", "owner_id": "u-rep2"}
    )
    deal_body = {
        "name": f"Renewal {MARKER}",
        "contact_id": contact["id"],
        "pipeline_id": pipeline["id"],
        "stage_id": stage,
        "amount": "10000.00",
        "currency": "USD",
        "expected_close_date": "2026-11-15",
    }
    deal = await make("deal", "/v1/deals", {**deal_body, "owner_id": "u-rep1"})
    await make(
        "foreign_deal",
        "/v1/deals",
        {**deal_body, "owner_id": "u-rep2", "contact_id": ids["foreign_contact"]},
    )
    # the won deal feeds commissions: a statement for u-rep1 (and a dispute on it)
    plan = await make("plan", "/v1/commission-plans", PLAN)
    await api.call(
        "POST",
        f"/v1/commission-plans/{plan['id']}/assignments",
        {"user_id": "u-rep1", "effective_from": "2026-01-01"},
    )
    await api.call(
        "PUT",
        f"/v1/quotas/u-rep1/{PERIOD}",
        {"amount": "100000.00", "currency": "USD"},
        headers={"If-Match": "*"},
    )
    reads["quota"] = f"/v1/quotas/u-rep1/{PERIOD}"
    await api.call(
        "PUT",
        f"/v1/quotas/teams/{team['id']}/{PERIOD}",
        {"amount": "300000.00", "currency": "USD"},
        headers={"If-Match": "*"},
    )
    reads["team_quota"] = f"/v1/quotas/teams/{team['id']}/{PERIOD}"
    won = await make(
        "won_deal", "/v1/deals", {**deal_body, "owner_id": "u-rep1", "name": f"Won {MARKER}"}
    )
    await api.call("POST", f"/v1/deals/{won['id']}/won", {"closed_at": "2026-11-10T10:00:00Z"})
    order = await api.call(
        "PUT",
        "/v1/orders/by-external-id/erp/SO-1",
        {
            "number": f"SO-1-{MARKER}",
            "contact_id": contact["id"],
            "deal_id": deal["id"],
            "amount": "100.00",
            "currency": "USD",
            "status": "paid",
            "ordered_at": "2026-11-01T10:00:00Z",
            "paid_at": "2026-11-02T10:00:00Z",
        },
    )
    ids["order"] = str(order["id"])
    reads["order"] = f"/v1/orders/{order['id']}"
    await make(
        "activity",
        "/v1/activities",
        {
            "type": "call",
            "subject": f"Call {MARKER}",
            "contact_id": contact["id"],
            "owner_id": "u-rep1",
        },
    )
    await make(
        "task",
        "/v1/tasks",
        {"title": f"Call back {MARKER}", "assignee_id": "u-rep1", "contact_id": contact["id"]},
    )
    await make(
        "playbook",
        "/v1/playbooks",
        {"title": f"Checklist {MARKER}", "body": "confirm budget", "stage_ids": [stage]},
    )
    fa = await api.call(
        "PUT",
        "/v1/forecast/adjustments",
        {
            "period": PERIOD,
            "category": "commit",
            "currency": "USD",
            "amount": "1.00",
            "user_id": "u-rep1",
            "note": MARKER,
        },
    )
    ids["forecast_adjustment"] = str(fa["id"])
    reads["forecast_adjustment"] = f"/v1/forecast/adjustments/{fa['id']}"
    await make("forecast_snapshot", "/v1/forecast/snapshots", {"period": PERIOD})
    # tickets
    group = await make("group", "/v1/groups", {"name": f"L1 {MARKER}", "agents": ["u-agent"]})
    bh = await make(
        "business_hours",
        "/v1/business-hours",
        {"name": f"NY {MARKER}", "timezone": "America/New_York", "weekly": WEEKLY},
    )
    await make(
        "sla_policy",
        "/v1/sla-policies",
        {
            "name": f"Std {MARKER}",
            "position": 1,
            "business_hours_id": bh["id"],
            "targets": {"normal": {"first_response": 600, "resolution": 6000}},
        },
    )
    await make(
        "ticket",
        "/v1/tickets",
        {
            "subject": f"Broken {MARKER}",
            "requester_contact_id": contact["id"],
            "group_id": group["id"],
        },
    )
    await api.call("POST", f"/v1/tickets/{ids['ticket']}/comments", {"body": f"note {MARKER}"})
    await make(
        "article",
        "/v1/kb/articles",
        {"title": f"Reset {MARKER}", "body": "how to reset", "status": "published", "locale": "en"},
    )
    # campaigns
    template = await make(
        "template",
        "/v1/email-templates",
        {"name": f"T {MARKER}", "subject": "Hi", "html": "<p>Hi</p>", "text": "Hi"},
    )
    segment = await make(
        "segment", "/v1/segments", {"name": f"S {MARKER}", "type": "static", "contact_ids": []}
    )
    await make(
        "campaign",
        "/v1/campaigns",
        {"name": f"C {MARKER}", "segment_id": segment["id"], "template_id": template["id"]},
    )
    await make(
        "sequence",
        "/v1/sequences",
        {"name": f"Q {MARKER}", "steps": [{"type": "wait", "days": 3}]},
    )
    await make(
        "scoring_model",
        "/v1/scoring-models",
        {"name": "default", "rules": [{"on": "email.clicked", "points": 30}], "threshold": "45"},
    )
    await make(
        "program",
        "/v1/loyalty/programs",
        {"name": f"P {MARKER}", "currency": "USD", "points_per_unit": "1", "earn_on": "deal_won"},
    )
    # contacts extras
    cf = await api.call(
        "POST",
        "/v1/custom-fields/contact",
        {"key": "size", "label": f"Size {MARKER}", "type": "text"},
    )
    ids["custom_field"] = str(cf["key"])
    reads["custom_field"] = "/v1/custom-fields/contact/size"
    job = await import_job(api)
    ids["import_job"] = job
    reads["import_job"] = f"/v1/contacts/imports/{job}"
    # gateway
    await make(
        "webhook",
        "/v1/webhooks",
        {"url": "http://127.0.0.1:9/hook", "event_types": ["crm.tickets.*"], "description": MARKER},
    )
    # commissions: a manual adjustment, then the statement of the won deal and a dispute
    await make(
        "adjustment",
        "/v1/adjustments",
        {"user_id": "u-rep1", "period": PERIOD, "amount": "10.00", "reason": MARKER},
    )
    statement = await wait_statement(api)
    ids["statement"] = str(statement["id"])
    reads["statement"] = f"/v1/statements/{statement['id']}"
    line = next(ln for ln in statement["lines"] if ln.get("deal_id"))
    s.extra["line_id"] = line["id"]
    dispute = await api.call(
        "POST",
        f"/v1/statements/{statement['id']}/disputes",
        {"line_id": line["id"], "reason": MARKER},
        role="sales_rep",
    )
    ids["dispute"] = str(dispute["id"])
    reads["dispute"] = f"/v1/disputes/{dispute['id']}"
    reads["contact_360"] = f"/v1/customers/{contact['id']}/360"
    await wait_360(api, contact["id"])
    await wait_360(api, ids["foreign_contact"])
    return s


async def import_job(api: Api) -> str:
    csv = f"first_name,email\nImported {MARKER},imp@acme.example\n".encode()
    r = await api.client.post(
        "/v1/contacts/imports",
        files={"file": ("c.csv", csv, "text/csv")},
        headers=api.auth("sales_rep"),  # the rep's own job: a rep reads only theirs
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def wait_statement(api: Api) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await api.client.get(
            "/v1/statements",
            params={"user_id": "u-rep1", "period": PERIOD},
            headers=api.auth("admin"),
        )
        items = r.json().get("items", []) if r.status_code == 200 else []
        if items and any(ln.get("deal_id") for ln in items[0].get("lines", [])):
            return dict(items[0])
        if items:  # the list may omit lines: read the statement itself
            one = await api.client.get(
                f"/v1/statements/{items[0]['id']}", headers=api.auth("admin")
            )
            doc = dict(one.json())
            if any(ln.get("deal_id") for ln in doc.get("lines", [])):
                return doc
        return None

    found = await wait_for(probe, timeout=40, interval=0.1, message="u-rep1's statement")
    assert found is not None
    return found


async def wait_360(api: Api, contact_id: str) -> None:
    async def probe() -> bool:
        r = await api.client.get(f"/v1/customers/{contact_id}/360", headers=api.auth("admin"))
        return r.status_code == 200

    await wait_for(probe, timeout=40, interval=0.1, message=f"360 of {contact_id}")


# Which seeded object fills a path parameter; keyed by (path prefix, name) first, then name.
PATH_PARAM_BY_PREFIX: dict[tuple[str, str], str] = {
    ("/v1/forecast/adjustments", "adjustment_id"): "forecast_adjustment",
    ("/v1/adjustments", "adjustment_id"): "adjustment",
    ("/v1/forecast/snapshots", "snapshot_id"): "forecast_snapshot",
}
PATH_PARAM_KIND = {
    "activity_id": "activity",
    "bh_id": "business_hours",
    "campaign_id": "campaign",
    "plan_id": "plan",
    "company_id": "company",
    "contact_id": "contact",
    "job_id": "import_job",
    "key": "custom_field",
    "deal_id": "deal",
    "dispute_id": "dispute",
    "template_id": "template",
    "group_id": "group",
    "article_id": "article",
    "program_id": "program",
    "order_id": "order",
    "pipeline_id": "pipeline",
    "playbook_id": "playbook",
    "team_id": "team",
    "model_id": "scoring_model",
    "segment_id": "segment",
    "sequence_id": "sequence",
    "policy_id": "sla_policy",
    "statement_id": "statement",
    "task_id": "task",
    "ticket_id": "ticket",
    "webhook_id": "webhook",
}
# Path parameters that name things rather than identify tenant A's objects.
PATH_PARAM_VALUE = {
    "object_type": "contact",
    "period": PERIOD,
    "system": "erp",
    "external_id": "ext-security-1",
    "user_id": "u-rep1",
    "token": "not-a-valid-signed-token",
}
QUERY_VALUE = {
    "period": PERIOD,
    "amount": "1000.00",
    "currency": "USD",
    "q": "reset",
    "from": "2026-01-01",
    "to": "2026-12-31",
}


def path_kind(path: str, name: str) -> str | None:
    for (prefix, pname), kind in PATH_PARAM_BY_PREFIX.items():
        if pname == name and path.startswith(prefix):
            return kind
    return PATH_PARAM_KIND.get(name)


def object_kinds(path: str) -> list[str]:
    """The seeded kinds a path template names (its tenant-A objects)."""
    names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
    return [k for n in names if (k := path_kind(path, n)) is not None]


def fill_path(
    path: str, ids: dict[str, str], integers: frozenset[str] = frozenset(), tag: str = ""
) -> str:
    """The path with tenant A's objects, fixed names, or unknown ids (a random UUID, or 1
    for an integer parameter)."""
    out = []
    for seg in path.split("/"):
        if seg.startswith("{"):
            name = seg[1:-1]
            kind = path_kind(path, name)
            if kind is not None:
                out.append(ids.get(kind) or str(uuid.uuid4()))
            elif name in integers:
                out.append("1")
            elif name == "external_id":
                out.append(f"{PATH_PARAM_VALUE[name]}{tag}")
            else:
                out.append(PATH_PARAM_VALUE.get(name, str(uuid.uuid4())))
        else:
            out.append(seg)
    return "/".join(out)


def query(doc: dict[str, Any], op: Op, ids: dict[str, str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for p in operation(doc, op).get("parameters", []):
        if p.get("in") != "query" or not p.get("required"):
            continue
        name = p["name"]
        kind = PATH_PARAM_KIND.get(name)
        if kind is not None:
            params[name] = ids.get(kind, str(uuid.uuid4()))
        else:
            params[name] = QUERY_VALUE.get(name, "x")
    return params


def body_for(op: Op, s: Seeds, tag: str = "") -> Any:
    """A valid request body for an operation (referring to tenant A's objects), or None."""
    ids = s.ids
    builders: dict[Op, Callable[[], Any]] = {
        ("POST", "/v1/activities"): lambda: {
            "type": "note",
            "subject": "n",
            "contact_id": ids["contact"],
        },
        ("PATCH", "/v1/activities/{activity_id}"): lambda: {"subject": "changed"},
        ("POST", "/v1/adjustments"): lambda: {
            "user_id": "u-rep1",
            "period": PERIOD,
            "amount": "5.00",
            "reason": "r",
        },
        ("POST", "/v1/business-hours"): lambda: {"name": "bh", "timezone": "UTC", "weekly": WEEKLY},
        ("PATCH", "/v1/business-hours/{bh_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/campaigns"): lambda: {
            "name": "c",
            "segment_id": ids["segment"],
            "template_id": ids["template"],
        },
        ("PATCH", "/v1/campaigns/{campaign_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/campaigns/{campaign_id}/schedule"): lambda: {
            "send_at": "2030-01-01T00:00:00Z"
        },
        ("POST", "/v1/campaigns/{campaign_id}/cancel"): lambda: {},
        ("POST", "/v1/commission-plans"): lambda: {**PLAN, "name": "p2"},
        ("PUT", "/v1/commission-plans/{plan_id}"): lambda: {**PLAN, "effective_from": "2026-07-01"},
        ("POST", "/v1/commission-plans/{plan_id}/assignments"): lambda: {
            "user_id": "u-rep9",
            "effective_from": "2026-01-01",
        },
        ("POST", "/v1/companies"): lambda: {"name": "Co"},
        ("PUT", "/v1/companies/by-external-id/{system}/{external_id}"): lambda: {"name": "Co ext"},
        ("PATCH", "/v1/companies/{company_id}"): lambda: {"industry": "changed"},
        ("POST", "/v1/contacts"): lambda: {"first_name": "New"},
        ("POST", "/v1/contacts/batch"): lambda: {
            "items": [{"first_name": "B", "external_ids": {"sap": f"B-{tag}"}}]
        },
        ("PUT", "/v1/contacts/by-external-id/{system}/{external_id}"): lambda: {
            "first_name": "Ext"
        },
        ("PATCH", "/v1/contacts/{contact_id}"): lambda: {"last_name": "changed"},
        ("POST", "/v1/contacts/{contact_id}/merge"): lambda: {"duplicate_ids": [ids["contact2"]]},
        ("POST", "/v1/contacts/{contact_id}/erase"): lambda: {},
        ("POST", "/v1/custom-fields/{object_type}"): lambda: {
            "key": "tier",
            "label": "Tier",
            "type": "text",
        },
        ("PATCH", "/v1/custom-fields/{object_type}/{key}"): lambda: {"label": "changed"},
        ("POST", "/v1/deals"): lambda: {
            "name": "d",
            "pipeline_id": ids["pipeline"],
            "currency": "USD",
            "amount": "1.00",
        },
        ("POST", "/v1/deals/batch"): lambda: {
            "items": [{"name": "d", "pipeline_id": ids["pipeline"], "currency": "USD"}]
        },
        ("PUT", "/v1/deals/by-external-id/{system}/{external_id}"): lambda: {
            "name": "d",
            "pipeline_id": ids["pipeline"],
            "currency": "USD",
        },
        ("PATCH", "/v1/deals/{deal_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/deals/{deal_id}/lost"): lambda: {"lost_reason": "price"},
        ("POST", "/v1/deals/{deal_id}/reopen"): lambda: {},
        ("POST", "/v1/deals/{deal_id}/won"): lambda: {},
        ("PATCH", "/v1/disputes/{dispute_id}"): lambda: {"status": "rejected", "resolution": "no"},
        ("POST", "/v1/email-templates"): lambda: {
            "name": "t",
            "subject": "s",
            "html": "<p>h</p>",
            "text": "h",
        },
        ("PATCH", "/v1/email-templates/{template_id}"): lambda: {"subject": "changed"},
        ("POST", "/v1/email-templates/{template_id}/preview"): lambda: {
            "contact_id": ids["contact"]
        },
        ("PUT", "/v1/forecast/adjustments"): lambda: {
            "period": PERIOD,
            "category": "commit",
            "currency": "USD",
            "amount": "2.00",
            "user_id": "u-rep1",
        },
        ("POST", "/v1/forecast/snapshots"): lambda: {"period": PERIOD},
        ("POST", "/v1/groups"): lambda: {"name": "g"},
        ("PATCH", "/v1/groups/{group_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/kb/articles"): lambda: {"title": "a"},
        ("PATCH", "/v1/kb/articles/{article_id}"): lambda: {"title": "changed"},
        ("POST", "/v1/loyalty/members/{contact_id}/adjust"): lambda: {"points": 5, "reason": "r"},
        ("POST", "/v1/loyalty/members/{contact_id}/redeem"): lambda: {"points": 1, "reason": "r"},
        ("POST", "/v1/loyalty/programs"): lambda: {
            "name": "p",
            "currency": "USD",
            "points_per_unit": "1",
            "earn_on": "order_paid",
        },
        ("PATCH", "/v1/loyalty/programs/{program_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/orders/batch"): lambda: {
            "items": [
                {
                    "number": f"SO-2{tag}",
                    "amount": "1.00",
                    "currency": "USD",
                    "ordered_at": "2026-11-01T10:00:00Z",
                    "external_ids": {"erp": f"SO-2{tag}"},
                }
            ]
        },
        ("PUT", "/v1/orders/by-external-id/{system}/{external_id}"): lambda: {
            "number": "SO-3",
            "amount": "1.00",
            "currency": "USD",
            "status": "open",
            "ordered_at": "2026-11-01T10:00:00Z",
        },
        ("POST", "/v1/periods/{period}/close"): lambda: {},
        ("POST", "/v1/periods/{period}/recompute"): lambda: {},
        ("POST", "/v1/pipelines"): lambda: {"name": "p", "stages": STAGES},
        ("PATCH", "/v1/pipelines/{pipeline_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/playbooks"): lambda: {"title": "pb", "body": "b"},
        ("PATCH", "/v1/playbooks/{playbook_id}"): lambda: {"title": "changed"},
        ("POST", "/v1/public/csat/{token}"): lambda: {"score": 5},
        ("POST", "/v1/public/nps/{token}"): lambda: {"score": 9},
        ("POST", "/v1/public/unsubscribe/{token}"): lambda: {},
        ("PUT", "/v1/quotas/teams/{team_id}/{period}"): lambda: {
            "amount": "1.00",
            "currency": "USD",
        },
        ("PUT", "/v1/quotas/{user_id}/{period}"): lambda: {"amount": "1.00", "currency": "USD"},
        ("POST", "/v1/scoring-models"): lambda: {
            "name": "other",
            "rules": [{"on": "email.clicked", "points": 1}],
            "threshold": "5",
        },
        ("PATCH", "/v1/scoring-models/{model_id}"): lambda: {"threshold": "50"},
        ("POST", "/v1/segments"): lambda: {"name": "s", "type": "static"},
        ("POST", "/v1/segments/preview"): lambda: {
            "filter": {"all": [{"field": "lifecycle_stage", "op": "eq", "value": "lead"}]}
        },
        ("PATCH", "/v1/segments/{segment_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/segments/{segment_id}/members"): lambda: {"contact_ids": [ids["contact"]]},
        ("POST", "/v1/segments/{segment_id}/members/remove"): lambda: {
            "contact_ids": [ids["contact2"]]
        },
        ("POST", "/v1/sequences"): lambda: {"name": "q", "steps": [{"type": "wait", "days": 1}]},
        ("PATCH", "/v1/sequences/{sequence_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/sequences/{sequence_id}/enrollments"): lambda: {"contact_id": ids["contact"]},
        ("POST", "/v1/sla-policies"): lambda: {
            "name": "p",
            "position": 5,
            "targets": {"high": {"first_response": 60}},
        },
        ("PATCH", "/v1/sla-policies/{policy_id}"): lambda: {"name": "changed"},
        ("POST", "/v1/statements/{statement_id}/approve"): lambda: {},
        ("POST", "/v1/statements/{statement_id}/pay"): lambda: {},
        ("POST", "/v1/statements/{statement_id}/disputes"): lambda: {
            "line_id": s.extra["line_id"],
            "reason": "again",
        },
        ("POST", "/v1/surveys/nps"): lambda: {"name": "n", "contact_ids": [ids["contact"]]},
        ("POST", "/v1/tasks"): lambda: {"title": "t"},
        ("PATCH", "/v1/tasks/{task_id}"): lambda: {"title": "changed"},
        ("POST", "/v1/teams"): lambda: {"name": "t"},
        ("PATCH", "/v1/teams/{team_id}"): lambda: {"name": "changed"},
        ("PUT", "/v1/teams/{team_id}/members/{user_id}"): lambda: {"role": "rep"},
        ("POST", "/v1/tickets"): lambda: {"subject": "s"},
        ("PUT", "/v1/tickets/by-external-id/{system}/{external_id}"): lambda: {"subject": "s"},
        ("PATCH", "/v1/tickets/{ticket_id}"): lambda: {"subject": "changed"},
        ("POST", "/v1/tickets/{ticket_id}/comments"): lambda: {"body": "c"},
        ("POST", "/v1/touchpoints"): lambda: {"channel": "web_form", "contact_id": ids["contact"]},
        ("POST", "/v1/webhooks"): lambda: {
            "url": "http://127.0.0.1:9/h",
            "event_types": ["crm.tickets.*"],
        },
        ("PATCH", "/v1/webhooks/{webhook_id}"): lambda: {"description": "changed"},
        ("POST", "/v1/webhooks/{webhook_id}/replay"): lambda: {
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-02T00:00:00Z",
        },
        ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): lambda: {},
    }
    build = builders.get(op)
    return build() if build is not None else None


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    params: dict[str, str]
    body: Any
    headers: dict[str, str]
    multipart: bool = False


def build_request(
    doc: dict[str, Any], op: Op, s: Seeds, *, stale: bool = True, tag: str = ""
) -> Request:
    """The concrete request for an operation on tenant A's objects. With `stale`, an
    operation taking `If-Match` on an existing object gets a stale one, so a caller who is
    allowed is answered 412 instead of changing the object."""
    method, path = op
    spec = operation(doc, op)
    headers: dict[str, str] = {}
    takes_if_match = any(
        p.get("in") == "header" and p["name"].lower() == "if-match"
        for p in spec.get("parameters", [])
    )
    if stale and takes_if_match and object_kinds(path):
        headers["If-Match"] = STALE
    content = spec.get("requestBody", {}).get("content", {})
    multipart = "multipart/form-data" in content
    body = None if multipart else body_for(op, s, tag)
    if body is None and "application/json" in content:
        body = {}
    integers = frozenset(
        p["name"]
        for p in spec.get("parameters", [])
        if p.get("in") == "path" and p.get("schema", {}).get("type") == "integer"
    )
    url = fill_path(path, s.ids, integers, tag)
    return Request(method, url, query(doc, op, s.ids), body, headers, multipart)


async def send(
    client: httpx.AsyncClient, req: Request, auth: dict[str, str] | None
) -> httpx.Response:
    headers = {**req.headers, **(auth or {})}
    if req.multipart:
        csv = b"first_name\nImported\n"
        return await client.request(
            req.method,
            req.url,
            params=req.params,
            files={"file": ("c.csv", csv, "text/csv")},
            headers=headers,
        )
    return await client.request(
        req.method,
        req.url,
        params=req.params,
        content=None if req.body is None else json.dumps(req.body).encode(),
        headers={**headers, "content-type": "application/json"}
        if req.body is not None
        else headers,
    )


Snapshot = dict[str, tuple[int, str | None, Any]]


async def snapshot(api: Api, s: Seeds) -> Snapshot:
    """What tenant A's admin reads of every seeded object: status, ETag and body."""
    out: Snapshot = {}
    for kind, url in sorted(s.reads.items()):
        r = await api.client.get(url, headers=api.auth("admin"))
        out[kind] = (r.status_code, r.headers.get("etag"), r.json() if r.content else None)
    return out


async def settled_snapshot(api: Api, s: Seeds) -> Snapshot:
    """A snapshot once asynchronous effects of the seeding (the 360 view, statements) have
    settled: two reads in a row agree."""
    previous: list[Snapshot] = [await snapshot(api, s)]

    async def stable() -> Snapshot | None:
        current = await snapshot(api, s)
        same = current == previous[0]
        previous[0] = current
        return current if same else None

    found = await wait_for(stable, timeout=30, interval=0.3, message="tenant A's objects to settle")
    assert found is not None
    return found


@dataclass
class World:
    """The running platform with tenant A seeded, and the merged OpenAPI document."""

    client: httpx.AsyncClient
    api: Api
    seeds: Seeds
    doc: dict[str, Any]
    ops: list[Op]


@pytest.fixture
def kit() -> ModuleType:
    """This module's helpers (tests cannot import a conftest under --import-mode=importlib)."""
    return sys.modules[__name__]


@pytest.fixture
async def world(platform: Any) -> World:
    api = Api(platform.client, platform.infra)
    seeds = await seed(api)
    r = await platform.client.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc = dict(r.json())
    return World(platform.client, api, seeds, doc, operations(doc))
