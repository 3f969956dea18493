"""Customer analytics end to end: real events through NATS into `metrics.rfm`, `.health` and
`.churn_risk`; the full pass's quintiles; `GET /v1/customers`; `/v1/settings/health`; and
the gateway's own events (outbox, then its event log) exactly once per crossing."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import ASGITransport, AsyncClient

from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, running, wait_for
from crm.common.v1.common_pb2 import Money
from crm.pipeline.v1 import pipeline_pb2 as ppb
from crm.tickets.v1 import tickets_pb2 as tpb
from gateway.app import build
from gateway.outgoing import outgoing_event
from gateway.readmodel.analytics.scoring import HEALTH_SIGNALS
from gateway.settings import GatewaySettings

NOW = datetime.now(UTC)
HEALTH = "crm.customers.customer.health_changed.v1"
CHURN = "crm.customers.customer.churn_risk_raised.v1"


def ts(t: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(t)
    return out


def wrap(msg: Any, tenant: str, aggregate_id: str, version: int, source: str) -> OutgoingEvent:
    return outgoing_event(
        msg,
        tenant=tenant,
        aggregate_id=aggregate_id,
        version=version,
        source=source,
        occurred_at=NOW,
    )


def paid_order(contact_id: str, days_ago: int, amount: str = "100.00") -> OutgoingEvent:
    oid = str(uuid.uuid4())
    at = ts(NOW - timedelta(days=days_ago))
    order = ppb.Order(
        id=oid, contact_id=contact_id, amount=Money(amount=amount, currency="USD"),
        status="paid", ordered_at=at, paid_at=at,
    )  # fmt: skip
    return wrap(ppb.OrderPaid(order=order), "acme", oid, 1, "crm/pipeline")


def urgent_ticket(contact_id: str) -> OutgoingEvent:
    tid = str(uuid.uuid4())
    ticket = tpb.Ticket(
        id=tid, subject="Down", status="open", priority="urgent", requester_contact_id=contact_id,
        version=1, created_at=ts(NOW),
        sla=[tpb.SlaClock(id=str(uuid.uuid4()), metric="first_response", due_at=ts(NOW),
                          breached=True)],
    )  # fmt: skip
    return wrap(tpb.TicketCreated(ticket=ticket), "acme", tid, 1, "crm/tickets")


def breach(contact_id: str) -> OutgoingEvent:
    clock = tpb.SlaClockRef(
        ticket_id=str(uuid.uuid4()), metric="resolution", due_at=ts(NOW - timedelta(hours=1)),
        requester_contact_id=contact_id,
    )  # fmt: skip
    return wrap(tpb.SlaBreached(clock=clock), "acme", str(uuid.uuid4()), 1, "crm/tickets")


def csat(contact_id: str, score: int, minutes: int = 0) -> OutgoingEvent:
    msg = tpb.CsatAnswered(
        ticket_id=str(uuid.uuid4()),
        contact_id=contact_id,
        score=score,
        answered_at=ts(NOW + timedelta(minutes=minutes)),
    )
    return wrap(msg, "acme", str(uuid.uuid4()), 1, "crm/tickets")


def nps(contact_id: str, score: int, category: str) -> OutgoingEvent:
    msg = tpb.NpsAnswered(
        contact_id=contact_id, score=score, category=category, answered_at=ts(NOW)
    )
    return wrap(msg, "acme", str(uuid.uuid4()), 1, "crm/tickets")


@pytest.fixture
async def gw(
    crm_infra: Infra, db_url: str, upstream_url: str
) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """The gateway app and a client (the test drives its full pass)."""
    settings = crm_infra.settings(
        GatewaySettings,
        "gateway",
        db_url,
        upstreams={"contacts": upstream_url},
        gc_freeze_at_startup=False,
    )
    app = build(settings)
    async with running(app):
        transport = ASGITransport(app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://gw") as c:
            yield app, c


@contextlib.asynccontextmanager
async def connect(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        yield conn
    finally:
        await conn.close()


async def read_doc(client: AsyncClient, infra: Infra, cid: str) -> dict[str, Any] | None:
    r = await client.get(f"/v1/customers/{cid}/360", headers=infra.auth())
    return json.loads(r.content) if r.status_code == 200 else None


async def settled_pass(app: FastAPI, db_url: str) -> None:
    """Wait until no tenant's full pass is due or running."""

    async def idle() -> bool:
        async with connect(db_url) as conn:
            busy = await conn.fetchval(
                "SELECT count(*) FROM rfm_breakpoints "
                "WHERE next_pass_at <= now() OR pass_cursor IS NOT NULL"
            )
        if busy:
            app.state.analytics_pass.wake()
        return bool(busy == 0)

    await wait_for(idle, timeout=30, message="full pass finished")


class TestMetricsFlow:
    async def test_tickets_and_nps_turn_a_customer_red_once(
        self, gw: tuple[FastAPI, AsyncClient], events: Any, crm_infra: Infra, db_url: str
    ) -> None:
        app, client = gw
        cid = str(uuid.uuid4())
        await events.publish(events.contact_created("acme", cid, owner_id="rep-1"))

        async def born() -> dict[str, Any] | None:
            doc = await read_doc(client, crm_infra, cid)
            return doc if doc and "health" in doc["metrics"] else None

        doc = await wait_for(born, timeout=15, message="document with metrics")
        assert doc is not None
        assert doc["metrics"]["health"]["band"] == "yellow"  # nothing known: neutral
        assert doc["metrics"]["churn_risk"] == {"score": "0.00", "reasons": []}

        await events.publish(
            urgent_ticket(cid), urgent_ticket(cid), breach(cid), breach(cid), csat(cid, 1),
            nps(cid, 2, "detractor"),
        )  # fmt: skip

        async def red() -> dict[str, Any] | None:
            doc = await read_doc(client, crm_infra, cid)
            m = doc["metrics"] if doc else {}
            done = m.get("nps") and m.get("last_csat") and m.get("sla_breaches_90d") == 2
            return doc if done and m.get("open_tickets") == 2 else None

        doc = await wait_for(red, timeout=20, message="tickets, breaches and surveys applied")
        assert doc is not None
        metrics = doc["metrics"]
        # 10 + 7.5 + 15/3 + 10*0.6 + 0 + 0 + 5 + 2.5 (neutral purchases, activity, email,
        # loyalty) = 36
        assert metrics["health"]["score"] == 36
        assert metrics["health"]["band"] == "red"
        signals = {s["name"]: s for s in metrics["health"]["signals"]}
        assert signals["open_urgent_tickets"]["value"] == 2
        assert signals["nps_category"] == {
            "name": "nps_category", "value": "detractor", "weight": 15.0, "contribution": 0.0,
        }  # fmt: skip
        assert metrics["churn_risk"]["score"] == "0.70"
        assert {r["code"] for r in metrics["churn_risk"]["reasons"]} == {
            "detractor_nps", "open_breached_ticket", "repeated_sla_breaches", "low_csat",
        }  # fmt: skip
        assert metrics["rfm"]["segment"] is None

        async def outbox() -> list[tuple[str, int]]:
            async with connect(db_url) as conn:
                rows = await conn.fetch(
                    "SELECT ce_type, aggregate_version FROM outbox WHERE aggregate_id = $1 "
                    "ORDER BY aggregate_version",
                    cid,
                )
            return [(r[0], r[1]) for r in rows]

        # More bad news and a full rescoring cross nothing again.
        await events.publish(csat(cid, 2, minutes=1))
        await wait_for(
            lambda: _csat_is(client, crm_infra, cid, 2), timeout=15, message="second CSAT"
        )
        r = await client.put(
            "/v1/settings/health",
            json={},
            headers={**crm_infra.auth(roles=["admin"]), "If-Match": '"0"'},
        )
        assert r.status_code == 200, r.text
        await settled_pass(app, db_url)
        rows = await outbox()
        assert sorted(ce for ce, _ in rows) == sorted([HEALTH, CHURN])
        assert [v for _, v in rows] == [1, 2]  # the customer aggregate's versions

        # The gateway's own event log (its `events-customers` consumer) picks them up.
        async def logged() -> list[Any] | None:
            async with connect(db_url) as conn:
                rows = await conn.fetch(
                    "SELECT ce_type, data FROM event_log WHERE aggregate_id = $1 "
                    "AND ce_type LIKE 'crm.customers.%'",
                    cid,
                )
            return list(rows) if len(rows) == 2 else None

        found = await wait_for(logged, timeout=20, message="customers events in the event log")
        assert found is not None
        data = {r[0]: json.loads(r[1]) for r in found}
        assert data[HEALTH]["old_band"] == "yellow"
        assert data[HEALTH]["new_band"] == "red"
        assert data[HEALTH]["owner_id"] == "rep-1"
        assert len(data[HEALTH]["signals"]) == 8
        assert data[CHURN]["new_score"] == "0.70"
        assert data[CHURN]["threshold"] == "0.60"


async def _csat_is(client: AsyncClient, infra: Infra, cid: str, score: int) -> bool:
    doc = await read_doc(client, infra, cid)
    return bool(doc and (doc["metrics"].get("last_csat") or {}).get("score") == score)


class TestRfmAndList:
    async def test_quintiles_segments_and_the_customers_list(
        self, gw: tuple[FastAPI, AsyncClient], events: Any, crm_infra: Infra, db_url: str
    ) -> None:
        app, client = gw
        # Customer k (1..5) bought k times, 30 days apart, last 10 * (6 - k) days ago.
        ids = {k: str(uuid.uuid4()) for k in range(1, 6)}
        for k, cid in ids.items():
            await events.publish(
                events.contact_created(
                    "acme", cid, first_name=f"Buyer{k}", owner_id="rep-1" if k % 2 else "rep-2"
                )
            )
            await events.publish(*(paid_order(cid, 10 * (6 - k) + 30 * j) for j in range(k)))
        idle = str(uuid.uuid4())
        await events.publish(events.contact_created("acme", idle, first_name="Nobody"))

        async def applied() -> bool:
            for k, cid in ids.items():
                doc = await read_doc(client, crm_infra, cid)
                if not doc or doc["metrics"].get("rfm", {}).get("frequency") != k:
                    return False
            return await read_doc(client, crm_infra, idle) is not None

        await wait_for(applied, timeout=30, message="orders applied")
        # A new full pass computes the breakpoints from these five buyers.
        r = await client.put(
            "/v1/settings/health",
            json={"churn_threshold": "0.6"},
            headers={**crm_infra.auth(roles=["admin"]), "If-Match": '"0"'},
        )
        assert r.status_code == 200, r.text
        await settled_pass(app, db_url)
        async with connect(db_url) as conn:
            row = await conn.fetchrow(
                "SELECT recency, frequency, monetary, currency, population FROM rfm_breakpoints"
            )
        assert row["recency"] == [10, 20, 30, 40]
        assert row["frequency"] == [1, 2, 3, 4]
        assert row["monetary"] == [100, 200, 300, 400]
        assert row["currency"] == "USD"
        assert row["population"] == 5
        expected = {1: "lost", 2: "hibernating", 3: "needs_attention", 4: "loyal", 5: "champions"}
        for k, cid in ids.items():
            doc = await read_doc(client, crm_infra, cid)
            assert doc is not None
            rfm = doc["metrics"]["rfm"]
            assert (rfm["r"], rfm["f"], rfm["m"]) == (k, k, k)
            assert rfm["segment"] == expected[k]
            assert rfm["recency_days"] == 10 * (6 - k)
            assert rfm["monetary"] == [{"currency": "USD", "amount": f"{100 * k}.00"}]

        admin = crm_infra.auth(roles=["admin"])

        async def listed(**params: Any) -> list[str]:
            r = await client.get("/v1/customers", params=params, headers=admin)
            assert r.status_code == 200, r.text
            return [i["customer_id"] for i in r.json()["items"]]

        assert await listed(rfm_segment="champions") == [ids[5]]
        assert set(await listed(rfm_segment="lost,loyal")) == {ids[1], ids[4]}
        assert await listed(rfm_segment="none") == [idle]
        assert await listed(q="buyer3") == [ids[3]]
        assert set(await listed(owner_id="rep-2")) == {ids[2], ids[4]}
        assert await listed(sort="name") == [*ids.values(), idle]
        r = await client.get("/v1/customers", params={"rfm_segment": "champions"}, headers=admin)
        item = r.json()["items"][0]
        assert item["name"] == "Buyer5 Lovelace"
        assert item["email"] == "ada@example.com"
        assert item["rfm_segment"] == "champions"
        assert item["lifetime_value"] == [{"currency": "USD", "amount": "500.00"}]
        assert item["health_band"] in ("green", "yellow", "red")
        assert item["churn_risk"] == "0.00"

        # Keyset pagination walks every sort without loss or repetition.
        for sort in ("churn_risk", "health", "updated_at", "name"):
            seen: list[str] = []
            cursor = None
            while True:
                params = {"sort": sort, "limit": 2, **({"cursor": cursor} if cursor else {})}
                r = await client.get("/v1/customers", params=params, headers=admin)
                assert r.status_code == 200, r.text
                seen += [i["customer_id"] for i in r.json()["items"]]
                cursor = r.json()["next_cursor"]
                if cursor is None:
                    break
            assert sorted(seen) == sorted([*ids.values(), idle]), sort
        scores = [
            i["health_score"]
            for i in (
                await client.get("/v1/customers", params={"sort": "health"}, headers=admin)
            ).json()["items"]
        ]
        assert scores == sorted(scores)

        # A sales rep sees its own customers only.
        rep = crm_infra.auth(roles=["sales_rep"], sub="rep-2")
        r = await client.get("/v1/customers", headers=rep)
        assert {i["customer_id"] for i in r.json()["items"]} == {ids[2], ids[4]}
        r = await client.get("/v1/customers", headers=crm_infra.auth(roles=["erp_sync"]))
        assert r.status_code == 403

        for bad in (
            {"sort": "revenue"},
            {"health": "purple"},
            {"rfm_segment": "vip"},
            {"churn_risk_gte": "2"},
            {"cursor": "garbage"},
        ):
            r = await client.get("/v1/customers", params=bad, headers=admin)
            assert r.status_code == 422, bad
            assert r.headers["content-type"].startswith("application/problem+json")


class TestHealthSettings:
    async def test_round_trip_and_validation(
        self, gw: tuple[FastAPI, AsyncClient], events: Any, crm_infra: Infra, db_url: str
    ) -> None:
        app, client = gw
        cid = str(uuid.uuid4())
        await events.publish(events.contact_created("acme", cid))
        await events.publish(nps(cid, 0, "detractor"))

        async def scored() -> dict[str, Any] | None:
            doc = await read_doc(client, crm_infra, cid)
            return doc if doc and doc["metrics"].get("nps") else None

        await wait_for(scored, timeout=15, message="NPS applied")
        marketer = crm_infra.auth(roles=["marketer"])
        r = await client.get("/v1/settings/health", headers=marketer)
        assert r.status_code == 200
        assert r.headers["etag"] == '"0"'
        assert r.json()["weights"]["purchase_recency"] == 20
        assert r.json()["churn_threshold"] == "0.60"
        admin = crm_infra.auth(roles=["admin"])
        body = {"weights": {"nps_category": 50, "loyalty_trend": 0}, "churn_threshold": "0.2"}
        r = await client.put("/v1/settings/health", json=body, headers=marketer)
        assert r.status_code == 403
        r = await client.put("/v1/settings/health", json=body, headers=admin)
        assert r.status_code == 428
        for bad in (
            {"weights": {"purchase_recency": -1}},
            {"weights": {"shoe_size": 1}},
            {"weights": dict.fromkeys(HEALTH_SIGNALS, 0)},
            {"churn_threshold": "1.5"},
        ):
            r = await client.put(
                "/v1/settings/health", json=bad, headers={**admin, "If-Match": '"0"'}
            )
            assert r.status_code == 422, bad
            assert r.headers["content-type"].startswith("application/problem+json")
        r = await client.put("/v1/settings/health", json=body, headers={**admin, "If-Match": '"0"'})
        assert r.status_code == 200, r.text
        assert r.headers["etag"] == '"1"'
        r = await client.get("/v1/settings/health", headers=marketer)
        assert r.json()["weights"]["nps_category"] == 50
        assert r.json()["weights"]["loyalty_trend"] == 0
        assert r.json()["weights"]["email_engagement"] == 10
        assert r.json()["churn_threshold"] == "0.20"
        r = await client.put("/v1/settings/health", json=body, headers={**admin, "If-Match": '"0"'})
        assert r.status_code == 412

        # The tenant is rescored at once: the detractor now weighs 50 of 125 and crosses 0.20.
        async def rescored() -> dict[str, Any] | None:
            doc = await read_doc(client, crm_infra, cid)
            signals = {
                s["name"]: s
                for s in (doc or {}).get("metrics", {}).get("health", {}).get("signals", [])
            }
            return doc if signals.get("nps_category", {}).get("weight") == 50 else None

        doc = await wait_for(rescored, timeout=20, message="rescored with the new weights")
        assert doc is not None
        # Neutral 0.5 for the unknown signals, 0 for the detractor, 1 for no tickets:
        # (10 + 7.5 + 15 + 10 + 5 + 0 + 5 + 0) / 130 -> 40.
        assert doc["metrics"]["health"]["score"] == 40
        await settled_pass(app, db_url)
        # The risk (0.25) was above the new threshold (0.20) already: the threshold moved, the
        # risk did not rise, so nothing is raised (and the band stays yellow).
        async with connect(db_url) as conn:
            n = await conn.fetchval("SELECT count(*) FROM outbox WHERE aggregate_id = $1", cid)
        assert n == 0


class TestListColumns:
    async def test_search_follows_company_and_forgets_the_erased(
        self, gw: tuple[FastAPI, AsyncClient], events: Any, crm_infra: Infra, db_url: str
    ) -> None:
        _, client = gw
        cid, company = str(uuid.uuid4()), str(uuid.uuid4())
        admin = crm_infra.auth(roles=["admin"])
        await events.publish(events.company_created("acme", company, name="Difference Engines"))
        await events.publish(
            events.contact_created("acme", cid, company_id=company, first_name="Charles")
        )

        async def found(q: str) -> list[dict[str, Any]] | None:
            r = await client.get("/v1/customers", params={"q": q}, headers=admin)
            assert r.status_code == 200, r.text
            return r.json()["items"] or None

        items = await wait_for(lambda: found("difference"), timeout=15, message="listed")
        assert items is not None
        assert items[0]["company_name"] == "Difference Engines"
        assert items[0]["name"] == "Charles Lovelace"
        assert items[0]["health_band"] == "yellow"
        await events.publish(
            events.company_updated("acme", company, 2, ["name"], name="Analytical Engines")
        )
        await wait_for(lambda: found("analytical"), timeout=15, message="company renamed")
        assert await found("difference") is None

        await events.publish(events.contact_erased("acme", cid, 2))

        async def forgotten() -> bool:
            async with connect(db_url) as conn:
                row = await conn.fetchrow(
                    "SELECT state, search_text, sort_name FROM customer_360 WHERE contact_id = $1",
                    uuid.UUID(cid),
                )
            return row is not None and row["state"] == "erased" and row["search_text"] is None

        await wait_for(forgotten, timeout=15, message="erased customer unsearchable")
        assert await found("charles") is None
