"""Fixtures: a migrated database, the running app (relay and the pipeline consumer included),
an HTTP client, an API helper and a publisher of pipeline events (built from the contract,
never from the pipeline service's code). Tests cannot import this module (importlib mode):
helpers come through fixtures."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats
import pytest
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import ASGITransport, AsyncClient

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, running, wait_for
from commissions.app import MIGRATIONS, CommissionsSettings, build
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.pipeline.v1 import pipeline_pb2 as pp
from crm.registry import ce_type_for

ISSUE_PLAN: dict[str, Any] = {
    "name": "Account Executive 2026",
    "period": "quarter",
    "currency": "USD",
    "effective_from": "2026-01-01",
    "credit_on": "deal_won",
    "tier_basis": "attainment",
    "tier_mode": "graduated",
    "tiers": [
        {"from": "0", "to": "0.5", "rate": "0.05"},
        {"from": "0.5", "to": "1.0", "rate": "0.10"},
        {"from": "1.0", "to": None, "rate": "0.15"},
    ],
    "cap": "50000.00",
    "spiffs": [{"product": "Onboarding", "amount_per_unit": "100.00"}],
    "clawback_days": 90,
}


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await crm_infra.database("crm_commissions", MIGRATIONS, "alembic_version_commissions")


@pytest.fixture
async def app(crm_infra: Infra, db_url: str) -> AsyncIterator[FastAPI]:
    application = build(crm_infra.settings(CommissionsSettings, "commissions", db_url))
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


def _ts(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


class PipelineEvents:
    """Builds pipeline events the way the contract describes them and publishes them to
    JetStream; each aggregate's version grows by one per event."""

    def __init__(self, nc: Any) -> None:
        self.js = nc.jetstream()
        self.versions: dict[str, int] = defaultdict(int)
        self.sent: list[OutgoingEvent] = []

    def _next(self, aggregate_id: str) -> int:
        self.versions[aggregate_id] += 1
        return self.versions[aggregate_id]

    @staticmethod
    def _meta(tenant: str, aggregate_id: str, version: int, at: datetime | None) -> EventMeta:
        return EventMeta(
            tenant_id=tenant,
            aggregate_id=aggregate_id,
            version=version,
            actor="u-admin",
            origin="web",
            occurred_at=_ts(at or datetime.now(UTC)),
        )

    @staticmethod
    def deal(
        deal_id: str,
        amount: str,
        owner: str,
        closed_at: datetime | None,
        *,
        status: str = "won",
        currency: str = "USD",
        splits: list[tuple[str, str]] | None = None,
        items: list[tuple[str, str]] | None = None,
        version: int = 1,
    ) -> pp.Deal:
        d = pp.Deal(
            id=deal_id,
            name=f"deal {deal_id[:8]}",
            owner_id=owner,
            amount=Money(amount=amount, currency=currency),
            status=status,
            splits=[pp.Split(user_id=u, percent=p) for u, p in splits or []],
            line_items=[pp.LineItem(product=p, quantity=q) for p, q in items or []],
            version=version,
        )
        if closed_at is not None:
            d.closed_at.CopyFrom(_ts(closed_at))
        return d

    async def publish(self, ev: OutgoingEvent) -> OutgoingEvent:
        await self.js.publish(ev.subject, ev.message.SerializeToString(), headers=ev.headers())
        self.sent.append(ev)
        return ev

    async def redeliver(self, ev: OutgoingEvent) -> None:
        """The same event again under a fresh NATS message id (past the broker's dedup), as
        a retried delivery would look to the consumer."""
        headers = ev.headers()
        headers["Nats-Msg-Id"] = str(uuid.uuid4())
        await self.js.publish(ev.subject, ev.message.SerializeToString(), headers=headers)

    async def _send(self, msg: Any, tenant: str, aggregate_id: str, version: int) -> OutgoingEvent:
        ev = OutgoingEvent(
            message=msg,
            ce_type=ce_type_for(msg),
            tenant=tenant,
            aggregate_id=aggregate_id,
            version=version,
            source="crm/pipeline",
        )
        return await self.publish(ev)

    async def deal_won(
        self, deal_id: str, amount: str, owner: str, closed_at: datetime, *,
        tenant: str = "acme", **kw: Any,
    ) -> OutgoingEvent:  # fmt: skip
        v = self._next(deal_id)
        d = self.deal(deal_id, amount, owner, closed_at, version=v, **kw)
        msg = pp.DealWon(meta=self._meta(tenant, deal_id, v, closed_at), deal=d)
        return await self._send(msg, tenant, deal_id, v)

    async def deal_updated(
        self, deal_id: str, amount: str, owner: str, closed_at: datetime | None, *,
        tenant: str = "acme", **kw: Any,
    ) -> OutgoingEvent:  # fmt: skip
        v = self._next(deal_id)
        d = self.deal(deal_id, amount, owner, closed_at, version=v, **kw)
        msg = pp.DealUpdated(meta=self._meta(tenant, deal_id, v, None), deal=d)
        return await self._send(msg, tenant, deal_id, v)

    async def deal_reopened(
        self, deal_id: str, amount: str, owner: str, at: datetime, *, tenant: str = "acme"
    ) -> OutgoingEvent:
        v = self._next(deal_id)
        d = self.deal(deal_id, amount, owner, None, status="open", version=v)
        msg = pp.DealReopened(meta=self._meta(tenant, deal_id, v, at), deal=d,
                              previous_status="won")  # fmt: skip
        return await self._send(msg, tenant, deal_id, v)

    async def deal_deleted(
        self, deal_id: str, owner: str, at: datetime, *, tenant: str = "acme"
    ) -> OutgoingEvent:
        v = self._next(deal_id)
        d = self.deal(deal_id, "0", owner, None, status="open", version=v)
        msg = pp.DealDeleted(meta=self._meta(tenant, deal_id, v, at), deal=d)
        return await self._send(msg, tenant, deal_id, v)

    async def order_paid(
        self, order_id: str, amount: str, owner: str, paid_at: datetime, *, tenant: str = "acme"
    ) -> OutgoingEvent:
        v = self._next(order_id)
        o = pp.Order(id=order_id, owner_id=owner, amount=Money(amount=amount, currency="USD"),
                     status="paid", paid_at=_ts(paid_at), version=v)  # fmt: skip
        msg = pp.OrderPaid(meta=self._meta(tenant, order_id, v, paid_at), order=o)
        return await self._send(msg, tenant, order_id, v)

    async def order_refunded(
        self, order_id: str, amount: str, owner: str, refunded_at: datetime, *,
        tenant: str = "acme",
    ) -> OutgoingEvent:  # fmt: skip
        v = self._next(order_id)
        o = pp.Order(id=order_id, owner_id=owner, amount=Money(amount=amount, currency="USD"),
                     status="refunded", refunded_at=_ts(refunded_at), version=v)  # fmt: skip
        msg = pp.OrderRefunded(meta=self._meta(tenant, order_id, v, refunded_at), order=o)
        return await self._send(msg, tenant, order_id, v)

    async def team(
        self, team_id: str, name: str, members: list[tuple[str, str]], *,
        parent_id: str = "", tenant: str = "acme",
    ) -> OutgoingEvent:  # fmt: skip
        v = self._next(team_id)
        t = pp.Team(id=team_id, name=name, parent_id=parent_id, version=v,
                    members=[pp.TeamMember(user_id=u, role=r) for u, r in members])  # fmt: skip
        meta = self._meta(tenant, team_id, v, None)
        msg: Any = (
            pp.TeamCreated(meta=meta, team=t) if v == 1 else pp.TeamUpdated(meta=meta, team=t)
        )
        return await self._send(msg, tenant, team_id, v)

    async def team_deleted(self, team_id: str, *, tenant: str = "acme") -> OutgoingEvent:
        v = self._next(team_id)
        return await self._send(pp.TeamDeleted(meta=self._meta(tenant, team_id, v, None)),
                                tenant, team_id, v)  # fmt: skip


@pytest.fixture
async def events(crm_infra: Infra, app: FastAPI) -> AsyncIterator[PipelineEvents]:
    nc = await nats.connect(crm_infra.nats_url)
    try:
        yield PipelineEvents(nc)
    finally:
        await nc.close()


class Api:
    """Thin helpers over the HTTP API and the database for arranging and checking."""

    def __init__(self, client: AsyncClient, infra: Infra, db_url: str) -> None:
        self.client = client
        self.infra = infra
        self.db_url = db_url

    def h(
        self,
        role: str = "admin",
        sub: str = "u-admin",
        tenant: str = "acme",
        teams: list[str] | None = None,
        **extra: str,
    ) -> dict[str, str]:
        return {**self.infra.auth(tenant=tenant, roles=[role], sub=sub, teams=teams), **extra}

    def rep(self, sub: str, tenant: str = "acme") -> dict[str, str]:
        return self.h("sales_rep", sub, tenant)

    def manager(self, sub: str, tenant: str = "acme") -> dict[str, str]:
        return self.h("sales_manager", sub, tenant)

    async def plan(self, tenant: str = "acme", **overrides: Any) -> dict[str, Any]:
        body = {**ISSUE_PLAN, **overrides}
        r = await self.client.post("/v1/commission-plans", json=body, headers=self.h(tenant=tenant))
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def assign(
        self, plan: dict[str, Any], tenant: str = "acme", **body: Any
    ) -> dict[str, Any]:
        body.setdefault("effective_from", "2026-01-01")
        r = await self.client.post(
            f"/v1/commission-plans/{plan['id']}/assignments", json=body,
            headers=self.h(tenant=tenant),
        )  # fmt: skip
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def quota(
        self, user: str, period: str, amount: str, tenant: str = "acme"
    ) -> dict[str, Any]:
        r = await self.client.put(
            f"/v1/quotas/{user}/{period}", json={"amount": amount, "currency": "USD"},
            headers=self.h(tenant=tenant, **{"If-Match": "*"}),
        )  # fmt: skip
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    async def statements(
        self, user: str, period: str, headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        r = await self.client.get(
            "/v1/statements", params={"user_id": user, "period": period},
            headers=headers or self.h(),
        )  # fmt: skip
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    async def statement(
        self, user: str, period: str, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        items = await self.statements(user, period, headers)
        return items[0] if items else None

    async def wait_statement(
        self, user: str, period: str, *, payout: str | None = None, version: int | None = None,
        tenant: str = "acme",
    ) -> dict[str, Any]:  # fmt: skip
        """Poll until the statement exists (and has that payout / version)."""

        async def probe() -> dict[str, Any] | None:
            st = await self.statement(user, period, self.h(tenant=tenant))
            if st is None:
                return None
            if payout is not None and st["payout"] != payout:
                return None
            if version is not None and st["version"] != version:
                return None
            return st

        return await wait_for(probe, timeout=15, message=f"statement {user} {period} {payout}")

    async def wait_team(self, team_id: str, members: int) -> None:
        async def probe() -> bool:
            n = await self.fetchval(
                "SELECT count(*) FROM team_members WHERE team_id = $1", uuid.UUID(team_id)
            )
            return n == members

        await wait_for(probe, timeout=15, message=f"team {team_id} replica")

    async def wait_consumed(self, n: int) -> None:
        """Until the consumer has applied (or skipped) `n` events into its inbox."""

        async def probe() -> bool:
            return bool(await self.fetchval("SELECT count(*) FROM inbox") >= n)

        await wait_for(probe, timeout=15, message=f"{n} consumed events")

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(asyncpg_dsn(self.db_url))
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def outbox_count(self, ce_type: str) -> int:
        return int(await self.fetchval("SELECT count(*) FROM outbox WHERE ce_type = $1", ce_type))


@pytest.fixture
async def api(client: AsyncClient, crm_infra: Infra, db_url: str) -> Api:
    return Api(client, crm_infra, db_url)
