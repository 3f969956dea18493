"""`metrics.rfm`, `metrics.health` and `metrics.churn_risk` of the 360 documents, from the
items of every section (`rm_items`), scored by `scoring`.

`refresh` runs after every section builder whose items it reads changed (the builders
registered with `document.section_builder` call it when they return, once for all the
customers a run of events touched, and `document.rebuild` once after all of them), in the
consumer's transaction, and by the periodic full pass (`fullpass`).
It locks the customers' rows, so two consumers refreshing one customer take turns and the
second sees the first's metrics: a band change or a threshold crossing is seen, and its
event written to the outbox (same transaction as the document), exactly once. A run of
events is rescored once at its end: a crossing undone within the run publishes nothing.

Events (context `customers`, aggregate `customer` = the contact id, version =
`customer_360.events_version`):
- `crm.customers.customer.health_changed.v1` when the band changes (not when the first
  score is computed: a document is born with the score of "nothing known");
- `crm.customers.customer.churn_risk_raised.v1` when the risk goes from below the tenant's
  threshold to at or above it (a document without a risk yet counts as 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import struct_pb2
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis import outbox
from chassis.driver import raw_connection
from crm.customers.v1 import customers_pb2 as pb
from gateway.outgoing import gateway_event
from gateway.readmodel import document
from gateway.readmodel.analytics import scoring
from gateway.readmodel.analytics.scoring import Facts, Purchase

DEFAULT_CHURN_THRESHOLD = Decimal("0.60")
CLOSED_TICKETS = frozenset({"solved", "closed"})

# Sections the scores read (name -> at most this many, newest first; None: all).
_SECTIONS: dict[str, int | None] = {
    "deals": None,
    "orders": None,
    "activities": 1,
    "tickets": None,
    "sla_breaches": None,
    "csat": 1,
    "nps": 1,
    "emails": None,
    "loyalty": None,
}


@dataclass(frozen=True)
class HealthSettings:
    weights: dict[str, float]
    churn_threshold: Decimal
    version: int  # 0: the defaults, never written


DEFAULT_SETTINGS = HealthSettings(dict(scoring.DEFAULT_WEIGHTS), DEFAULT_CHURN_THRESHOLD, 0)


@dataclass(frozen=True)
class Cuts:
    """The tenant's RFM breakpoints and primary currency (the defaults before a full pass)."""

    cuts: dict[str, list[float]]
    currency: str | None


async def load_settings(session: AsyncSession, tenant: str) -> HealthSettings:
    settings, _ = await load_both(session, tenant)
    return settings


async def load_cuts(session: AsyncSession, tenant: str) -> Cuts:
    """The stored breakpoints; a tenant without any is queued for a full pass now."""
    row = (
        await session.execute(
            text(
                "SELECT recency, frequency, monetary, currency FROM rfm_breakpoints "
                "WHERE tenant_id = :tenant"
            ),
            {"tenant": tenant},
        )
    ).first()
    if row is None:
        await session.execute(
            text(
                "INSERT INTO rfm_breakpoints (tenant_id) VALUES (:tenant) "
                "ON CONFLICT (tenant_id) DO NOTHING"
            ),
            {"tenant": tenant},
        )
        wake_after_commit(session)
    if row is None or row[0] is None:
        return Cuts(scoring.DEFAULT_BREAKPOINTS, None)
    return Cuts({"recency": row[0], "frequency": row[1], "monetary": row[2]}, row[3])


_LOAD_BOTH = """
    SELECT h.weights, h.churn_threshold, h.version,
           b.recency, b.frequency, b.monetary, b.currency
    FROM (SELECT 1) AS one
    LEFT JOIN health_settings h ON h.tenant_id = $1
    LEFT JOIN rfm_breakpoints b ON b.tenant_id = $1
"""


async def load_both(session: AsyncSession, tenant: str) -> tuple[HealthSettings, Cuts | None]:
    """Settings and stored breakpoints in one round trip (the incremental path); None for
    breakpoints not computed yet."""
    # on the driver connection (a cached prepared statement): every read-model batch that
    # creates documents runs it
    driver = await raw_connection(session)
    row = await driver.fetchrow(_LOAD_BOTH, tenant)
    settings = DEFAULT_SETTINGS
    if row[0] is not None:
        stored = json.loads(row[0]) if isinstance(row[0], str) else row[0]
        weights = {**scoring.DEFAULT_WEIGHTS, **{k: float(v) for k, v in stored.items()}}
        settings = HealthSettings(weights, Decimal(row[1]), int(row[2]))
    cuts = None
    if row[3] is not None:
        cuts = Cuts({"recency": row[3], "frequency": row[4], "monetary": row[5]}, row[6])
    return settings, cuts


# --- from items to facts -------------------------------------------------------------------


def _at(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def purchases(deals: list[dict[str, Any]], orders: list[dict[str, Any]]) -> list[Purchase]:
    """Paid orders and won deals that no order fulfils (as in `lifetime_value`)."""
    out: list[Purchase] = []
    fulfilled = {o["deal_id"] for o in orders if o.get("deal_id")}
    for o in orders:
        at = _at(o.get("paid_at")) or _at(o.get("ordered_at"))
        if o["status"] == "paid" and at is not None:
            out.append(Purchase(at, o["currency"], Decimal(o["amount"])))
    for d in deals:
        at = _at(d.get("closed_at")) or _at(d.get("updated_at"))
        if d["status"] == "won" and d["id"] not in fulfilled and at is not None:
            out.append(Purchase(at, d["currency"], Decimal(d["amount"])))
    return out


def facts_of(sections: dict[str, list[dict[str, Any]]], now: datetime) -> Facts:
    tickets = [t for t in sections.get("tickets", []) if t["status"] not in CLOSED_TICKETS]
    since = now - timedelta(days=90)
    breaches = sections.get("sla_breaches", [])
    emails = sorted(sections.get("emails", []), key=lambda e: e.get("sent_at") or "", reverse=True)
    activity = sections.get("activities", [])
    csat = sections.get("csat", [])
    nps = sections.get("nps", [])
    loyalty = sections.get("loyalty", [])
    return Facts(
        purchases=purchases(sections.get("deals", []), sections.get("orders", [])),
        last_activity_at=_at(activity[0].get("occurred_at")) if activity else None,
        open_urgent_tickets=sum(1 for t in tickets if t["priority"] == "urgent"),
        open_breached_tickets=sum(
            1 for t in tickets if any(c["breached"] for c in t.get("sla", {}).values())
        ),
        sla_breaches_90d=sum(
            1 for b in breaches if (at := _at(b.get("due_at"))) is not None and at >= since
        ),
        last_csat=int(csat[0]["score"]) if csat else None,
        nps_category=nps[0]["category"] if nps else None,
        emails=[(bool(e["opened"]), bool(e["clicked"])) for e in emails],
        unsubscribed=any(e.get("unsubscribed") for e in emails),
        loyalty_points_365d=sum(int(m["points_365d"]) for m in loyalty) if loyalty else None,
    )


def compute(facts: Facts, now: datetime, settings: HealthSettings, cuts: Cuts) -> dict[str, Any]:
    return {
        "rfm": scoring.rfm(facts.purchases, now, cuts.cuts, cuts.currency),
        "health": scoring.health(facts, now, settings.weights),
        "churn_risk": scoring.churn_risk(facts, now),
    }


async def empty_metrics(session: AsyncSession, tenant: str) -> dict[str, Any]:
    """The metrics of a customer the read model knows nothing about yet (a new document)."""
    settings = await load_settings(session, tenant)
    return compute(Facts(), datetime.now(UTC), settings, Cuts(scoring.DEFAULT_BREAKPOINTS, None))


# --- events --------------------------------------------------------------------------------


def _value(v: Any) -> struct_pb2.Value:
    if v is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(v, bool):
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, int | float):
        return struct_pb2.Value(number_value=float(v))
    return struct_pb2.Value(string_value=str(v))


def events_for(
    contact_id: str,
    owner_id: str | None,
    old: dict[str, Any],
    new: dict[str, Any],
    threshold: Decimal,
) -> list[Any]:
    """The messages a change of metrics publishes (without meta)."""
    out: list[Any] = []
    old_health, health = old.get("health"), new["health"]
    if old_health and old_health.get("band") and old_health["band"] != health["band"]:
        out.append(
            pb.HealthChanged(
                contact_id=contact_id,
                owner_id=owner_id or "",
                old_score=int(old_health["score"]),
                old_band=old_health["band"],
                new_score=health["score"],
                new_band=health["band"],
                signals=[
                    pb.HealthSignal(
                        name=s["name"],
                        value=_value(s["value"]),
                        weight=s["weight"],
                        contribution=s["contribution"],
                    )
                    for s in health["signals"]
                ],
            )
        )
    before = Decimal((old.get("churn_risk") or {}).get("score") or "0")
    after = Decimal(new["churn_risk"]["score"])
    if before < threshold <= after:
        out.append(
            pb.ChurnRiskRaised(
                contact_id=contact_id,
                owner_id=owner_id or "",
                old_score=str(before.quantize(Decimal("0.01"))),
                new_score=str(after),
                threshold=str(threshold),
                reasons=[pb.ChurnReason(**r) for r in new["churn_risk"]["reasons"]],
            )
        )
    return out


# --- refresh -------------------------------------------------------------------------------

_LOCK = """
SELECT CAST(contact_id AS text), owner_id, doc -> 'metrics', events_version
FROM customer_360
WHERE tenant_id = :tenant AND contact_id = ANY(CAST(:ids AS uuid[])) AND doc IS NOT NULL
ORDER BY contact_id
FOR UPDATE
"""

_WRITE = text("""
UPDATE customer_360 SET updated_at = now(), revision = revision + 1,
    events_version = :events_version, rfm_segment = :rfm_segment,
    health_score = :health_score, health_band = :health_band,
    churn_risk = CAST(:churn_risk AS numeric),
    doc = jsonb_set(doc, '{metrics}',
                    COALESCE(doc -> 'metrics', '{}'::jsonb) || CAST(:metrics AS jsonb))
WHERE tenant_id = :tenant AND contact_id = CAST(:contact_id AS uuid) AND doc IS NOT NULL
""")


async def refresh(
    session: AsyncSession,
    tenant: str,
    contact_ids: list[str],
    *,
    now: datetime | None = None,
    cuts: Cuts | None = None,
    skip_locked: bool = False,
) -> int:
    """Rescore these customers; write the metrics that changed and their events. Returns
    how many customers were scored (`skip_locked`: rows another transaction holds are left
    to it; it refreshes them itself)."""
    if not contact_ids:
        return 0
    now = now or datetime.now(UTC)
    sql = _LOCK + (" SKIP LOCKED" if skip_locked else "")
    rows = (await session.execute(text(sql), {"tenant": tenant, "ids": contact_ids})).all()
    if not rows:
        return 0
    settings, stored = await load_both(session, tenant)
    cuts = cuts or stored or await load_cuts(session, tenant)
    items = await document.items_of(
        session, tenant=tenant, contact_ids=[r[0] for r in rows], sections=_SECTIONS
    )
    writes = []
    for contact_id, owner_id, old_metrics, events_version in rows:
        old = old_metrics or {}
        new = compute(facts_of(items[contact_id], now), now, settings, cuts)
        if all(old.get(k) == v for k, v in new.items()):
            continue
        version = int(events_version)
        for msg in events_for(contact_id, owner_id, old, new, settings.churn_threshold):
            version += 1
            outbox.add(
                session,
                gateway_event(
                    msg,
                    tenant=tenant,
                    aggregate_id=contact_id,
                    version=version,
                    origin="analytics",
                    now=now,
                ),
            )
        writes.append(
            {
                "tenant": tenant,
                "contact_id": contact_id,
                "metrics": json.dumps(new, separators=(",", ":")),
                "events_version": version,
                **document.metric_columns(new),
            }
        )
    if writes:
        await session.execute(_WRITE, writes)
    return len(rows)


async def _after_build(session: AsyncSession, tenant: str, contact_ids: list[str]) -> None:
    await refresh(session, tenant, contact_ids)


document.after_builders(_after_build, reads=_SECTIONS)


# --- waking the full pass ------------------------------------------------------------------

_wakers: set[Callable[[], None]] = set()


def add_waker(fn: Callable[[], None]) -> None:
    _wakers.add(fn)


def remove_waker(fn: Callable[[], None]) -> None:
    _wakers.discard(fn)


def wake_after_commit(session: AsyncSession) -> None:
    """Wake this process's full pass once `session`'s transaction has committed."""

    def committed(_session: object) -> None:
        for fn in list(_wakers):
            fn()

    sa_event.listen(session.sync_session, "after_commit", committed, once=True)
