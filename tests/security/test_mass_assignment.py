"""Mass assignment: fields a client must not set (`tenant_id`, `id`, `version`,
`created_at`, owners, roles) in the bodies of every POST/PUT/PATCH of the merged OpenAPI
document never change what they protect. A service may reject them (422, `extra="forbid"`)
or ignore them; the protected value never moves."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

FOREIGN_ID = str(uuid.uuid4())
ANCIENT = "2000-01-01T00:00:00Z"
# Injected into every body. `roles`/`tenant`/`sub` mimic token claims.
INJECTED = {
    "tenant_id": "globex",
    "tenant": "globex",
    "id": FOREIGN_ID,
    "version": 999,
    "created_at": ANCIENT,
    "updated_at": ANCIENT,
    "created_by": "u-evil",
    "roles": ["admin"],
    "sub": "u-evil",
}
# Operations whose body is not an object the injection can extend, or whose "success"
# means nothing for this test.
NOT_INJECTABLE = {
    "POST /v1/contacts/imports": "multipart upload: the file's columns are mapped to fields, "
    "and `tenant_id`/`id`/`version` are not mappable (see contacts' import mapping)",
}


def key(op: tuple[str, str]) -> str:
    return f"{op[0]} {op[1]}"


def leaked(body: Any, injected_path_id: str | None) -> list[str]:
    """Which protected values in an answer came from the injection."""
    if not isinstance(body, dict):
        return []
    bad = []
    if body.get("tenant_id") not in (None, "acme"):
        bad.append(f"tenant_id={body['tenant_id']}")
    if body.get("tenant") not in (None, "acme"):
        bad.append(f"tenant={body['tenant']}")
    if body.get("id") == FOREIGN_ID and injected_path_id != FOREIGN_ID:
        bad.append("id taken from the body")
    if body.get("version") == 999:
        bad.append("version taken from the body")
    if str(body.get("created_at", "")).startswith("2000-01-01"):
        bad.append("created_at taken from the body")
    if body.get("created_by") == "u-evil":
        bad.append("created_by taken from the body")
    items = body.get("items")
    if isinstance(items, list):  # batch answers: one result per item
        for item in items:
            bad += leaked(item, injected_path_id)
    return bad


def inject(body: Any) -> Any:
    if isinstance(body, dict):
        out = {**body, **INJECTED}
        for name in ("items",):  # batches: inject into every item too
            if isinstance(out.get(name), list):
                out[name] = [inject(i) for i in out[name]]
        return out
    return body


@pytest.mark.timeout(600)
class TestInjectedFields:
    async def test_protected_fields_never_change(self, world: Any, kit: Any) -> None:
        """Every write with injected fields, then the owner and role cases (one seeding)."""
        api, seeds, doc, client = world.api, world.seeds, world.doc, world.client
        admin = api.auth("admin")
        failures = await owners_and_roles(world, kit)
        writes = [
            op
            for op in world.ops
            if op[0] in ("POST", "PUT", "PATCH")
            and "requestBody" in kit.operation(doc, op)
            and not op[1].startswith("/v1/public/")
        ]
        skipped = [op for op in writes if key(op) in NOT_INJECTABLE]
        tried = 0
        for op in sorted(writes):
            if key(op) in NOT_INJECTABLE:
                continue
            req = kit.build_request(doc, op, seeds, stale=False, tag="ma")
            headers = dict(req.headers)
            if "if-match" in {
                p["name"].lower()
                for p in kit.operation(doc, op).get("parameters", [])
                if p.get("in") == "header"
            }:
                current = await client.get(req.url, headers=admin)
                headers["If-Match"] = current.headers.get("etag", '"*"')
            res = await client.request(
                req.method,
                req.url,
                params=req.params,
                json=inject(req.body),
                headers={**admin, **headers},
            )
            tried += 1
            if res.status_code >= 500:
                failures.append(f"{key(op)}: server error {res.status_code} {res.text[:200]}")
                continue
            if res.status_code < 300 and res.content:
                path_ids = set(req.url.split("/"))
                for problem in leaked(res.json(), FOREIGN_ID if FOREIGN_ID in path_ids else None):
                    failures.append(f"{key(op)}: {problem}")
        # Had any write honoured tenant_id, tenant B would now own something: every list of
        # B's must be empty (B itself never wrote).
        b_admin = api.auth("admin", tenant=kit.TENANT_B)
        for op in world.ops:
            if op[0] != "GET" or "{" in op[1] or not op[1].startswith("/v1/"):
                continue
            req = kit.build_request(doc, op, seeds)
            res = await client.get(req.url, params=req.params, headers=b_admin)
            items = res.json().get("items") if res.status_code == 200 else None
            if isinstance(items, list) and items:
                failures.append(f"tenant B sees {len(items)} item(s) in {op[1]}: {items[0]}")
        # nothing was written with the injected id
        for path in (f"/v1/contacts/{FOREIGN_ID}", f"/v1/deals/{FOREIGN_ID}"):
            res = await client.get(path, headers=admin)
            if res.status_code != 404:
                failures.append(f"an object was created with the injected id: {path}")
        assert not failures, f"{len(failures)} mass-assignment failures:\n" + "\n".join(failures)
        assert tried + len(skipped) == len(writes)
        assert tried > 60


async def owners_and_roles(world: Any, kit: Any) -> list[str]:
    """Callers cannot reassign owners beyond their scope or grant themselves roles."""
    api, seeds, client = world.api, world.seeds, world.client
    ids = seeds.ids
    rep = api.auth("sales_rep")
    failures: list[str] = []

    async def expect(
        what: str,
        method: str,
        path: str,
        body: Any,
        auth: dict[str, str],
        allowed: set[int],
        etag_of: str | None = None,
    ) -> Any:
        headers = dict(auth)
        if etag_of is not None:
            current = await client.get(etag_of, headers=api.auth("admin"))
            headers["If-Match"] = current.headers.get("etag", "")
        res = await client.request(method, path, json=body, headers=headers)
        if res.status_code not in allowed:
            failures.append(
                f"{what}: expected {sorted(allowed)}, got {res.status_code} {res.text[:200]}"
            )
        return res.json() if res.content else None

    async def field(path: str, name: str) -> Any:
        res = await client.get(path, headers=api.auth("admin"))
        return res.json().get(name)

    # contacts: a rep's record is theirs; assigning it to someone else is 422
    made = await expect(
        "rep creates a contact for u-rep2",
        "POST",
        "/v1/contacts",
        {"first_name": "X", "owner_id": "u-rep2"},
        rep,
        {201, 422},
    )
    if isinstance(made, dict) and made.get("owner_id") not in (None, "u-rep1"):
        failures.append(f"rep created a contact owned by {made.get('owner_id')}")
    await expect(
        "rep reassigns own contact",
        "PATCH",
        f"/v1/contacts/{ids['contact']}",
        {"owner_id": "u-rep2"},
        rep,
        {403, 422},
        etag_of=f"/v1/contacts/{ids['contact']}",
    )
    if await field(f"/v1/contacts/{ids['contact']}", "owner_id") != "u-rep1":
        failures.append("the rep moved their contact to u-rep2")
    await expect(
        "rep reassigns own company",
        "PATCH",
        f"/v1/companies/{ids['company']}",
        {"owner_id": "u-rep2"},
        rep,
        {403, 422},
        etag_of=f"/v1/companies/{ids['company']}",
    )
    if await field(f"/v1/companies/{ids['company']}", "owner_id") != "u-rep1":
        failures.append("the rep moved their company to u-rep2")
    # deals: writing for an owner outside the caller's scope is 403
    deal_body = {
        "name": "d",
        "pipeline_id": ids["pipeline"],
        "currency": "USD",
        "owner_id": "u-rep2",
    }
    await expect("rep creates a deal for u-rep2", "POST", "/v1/deals", deal_body, rep, {403})
    await expect(
        "rep reassigns own deal",
        "PATCH",
        f"/v1/deals/{ids['deal']}",
        {"owner_id": "u-rep2"},
        rep,
        {403},
        etag_of=f"/v1/deals/{ids['deal']}",
    )
    if await field(f"/v1/deals/{ids['deal']}", "owner_id") != "u-rep1":
        failures.append("the rep moved their deal to u-rep2")
    await expect(
        "rep upserts a deal for u-rep2",
        "PUT",
        "/v1/deals/by-external-id/erp/MA-1",
        deal_body,
        rep,
        {403},
    )
    await expect(
        "rep batch-creates a deal for u-rep2",
        "POST",
        "/v1/deals/batch",
        {"items": [deal_body]},
        rep,
        {200, 403},
    )
    res = await client.get("/v1/deals", params={"owner_id": "u-rep2"}, headers=api.auth("admin"))
    owners = [d["name"] for d in res.json()["items"] if d["name"] == "d"]
    if owners:
        failures.append(f"a deal for u-rep2 was created by the rep: {owners}")
    # activities / tasks for someone outside the caller's scope: 403
    await expect(
        "rep logs an activity for u-rep2",
        "POST",
        "/v1/activities",
        {"type": "call", "owner_id": "u-rep2"},
        rep,
        {403},
    )
    await expect(
        "rep assigns a task to u-rep2",
        "POST",
        "/v1/tasks",
        {"title": "t", "assignee_id": "u-rep2"},
        rep,
        {403},
    )
    await expect(
        "rep moves own activity to u-rep2",
        "PATCH",
        f"/v1/activities/{ids['activity']}",
        {"owner_id": "u-rep2"},
        rep,
        {403},
        etag_of=f"/v1/activities/{ids['activity']}",
    )
    # commissions: a manager never sets their own quota; a rep none
    mgr = api.auth("sales_manager")
    await expect(
        "manager sets own quota",
        "PUT",
        f"/v1/quotas/u-mgr/{kit.PERIOD}",
        {"amount": "1.00", "currency": "USD"},
        {**mgr, "If-Match": "*"},
        {403},
    )
    await expect(
        "rep sets own quota",
        "PUT",
        f"/v1/quotas/u-rep1/{kit.PERIOD}",
        {"amount": "1.00", "currency": "USD"},
        {**rep, "If-Match": "*"},
        {403},
    )
    await expect(
        "manager books an adjustment for self",
        "POST",
        "/v1/adjustments",
        {"user_id": "u-mgr", "period": kit.PERIOD, "amount": "1.00", "reason": "r"},
        mgr,
        {403, 404},
    )
    # roles and teams are the token's: body fields never escalate
    escalation = {"roles": ["admin"], "role": "admin", "is_admin": True, "teams": ["x"]}
    await expect(
        "rep creates a pipeline with roles in the body",
        "POST",
        "/v1/pipelines",
        {"name": "p", "stages": kit.STAGES, **escalation},
        rep,
        {403, 422},
    )
    await expect(
        "rep makes themselves manager",
        "PUT",
        f"/v1/teams/{ids['team']}/members/u-rep1",
        {"role": "manager"},
        rep,
        {403},
        etag_of=f"/v1/teams/{ids['team']}",
    )
    members = await field(f"/v1/teams/{ids['team']}", "members")
    if {"user_id": "u-rep1", "role": "manager"} in [
        {"user_id": m["user_id"], "role": m["role"]} for m in members or []
    ]:
        failures.append("the rep made themselves a manager")
    await expect(
        "marketer creates a webhook with roles in the body",
        "POST",
        "/v1/webhooks",
        {"url": "http://127.0.0.1:9/h", "event_types": ["crm.*"], **escalation},
        api.auth("marketer"),
        {403, 422},
    )
    # a statement's rep disputes only their own statement, whatever the body names
    await expect(
        "another rep disputes u-rep1's statement",
        "POST",
        f"/v1/statements/{ids['statement']}/disputes",
        {"line_id": seeds.extra["line_id"], "reason": "mine"},
        api.auth("sales_rep", sub="u-rep2"),
        {404},
    )
    # where a service ignores unknown fields (campaigns), role fields still grant nothing
    await expect(
        "rep creates a segment with roles in the body",
        "POST",
        "/v1/segments",
        {"name": "s", "type": "static", **escalation},
        rep,
        {403},
    )
    return failures
