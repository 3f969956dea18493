"""Fixtures: a migrated database, the running app (relay, consumers, schedulers), an HTTP
client, an SMTP sink on a free port, and a publisher of the upstream events (contacts and
pipeline) built from their protobuf contracts. Tests cannot import this module (importlib
mode): helpers come through fixtures."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest
from fastapi import FastAPI
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from httpx import ASGITransport, AsyncClient

from campaigns.app import MIGRATIONS, CampaignsSettings, build
from campaigns.smtp_sink import SmtpSink
from chassis.db import asyncpg_dsn
from chassis.events import OutgoingEvent
from chassis.testing import Infra, running, wait_for
from crm.common.v1.common_pb2 import EventMeta, Money
from crm.contacts.v1 import contacts_pb2 as cpb
from crm.pipeline.v1 import pipeline_pb2 as ppb
from crm.registry import ce_type_for


def _ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    server = SmtpSink(tmp_path / "mail", host="127.0.0.1", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def db_url(crm_infra: Infra, clean_streams: None) -> str:
    return await crm_infra.database("crm_campaigns", MIGRATIONS, "alembic_version_campaigns")


@pytest.fixture
def settings(crm_infra: Infra, db_url: str, sink: SmtpSink) -> CampaignsSettings:
    return crm_infra.settings(
        CampaignsSettings,
        "campaigns",
        db_url,
        scheduler_poll_seconds=0.2,
        smtp_port=sink.port,
        send_retry_base_seconds=0.05,
        send_rate_per_second=0,
        public_base_url="http://public.test",
    )


@pytest.fixture
async def app(settings: CampaignsSettings) -> AsyncIterator[FastAPI]:
    application = build(settings)
    async with running(application):
        yield application


@pytest.fixture
async def client(app: FastAPI, crm_infra: Infra) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app, raise_app_exceptions=False)
    async with AsyncClient(
        transport=transport, base_url="http://test", headers=crm_infra.auth(roles=["marketer"])
    ) as c:
        yield c


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(db_url))
    try:
        yield conn
    finally:
        await conn.close()


class Upstream:
    """Publishes contacts and pipeline events the way those services do."""

    T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __init__(self, nc: Any, db: asyncpg.Connection) -> None:
        self.js = nc.jetstream()
        self.db = db
        self.versions: dict[str, int] = {}

    def _next(self, aggregate_id: str) -> int:
        self.versions[aggregate_id] = self.versions.get(aggregate_id, 0) + 1
        return self.versions[aggregate_id]

    def _meta(self, tenant: str, aggregate_id: str, version: int) -> EventMeta:
        return EventMeta(
            tenant_id=tenant,
            aggregate_id=aggregate_id,
            version=version,
            actor="user-1",
            origin="web",
            occurred_at=_ts(datetime.now(UTC)),
        )

    async def _publish(
        self, msg: Any, tenant: str, aggregate_id: str, version: int, source: str
    ) -> None:
        ev = OutgoingEvent(
            message=msg,
            ce_type=ce_type_for(msg),
            tenant=tenant,
            aggregate_id=aggregate_id,
            version=version,
            source=source,
        )
        await self.js.publish(ev.subject, msg.SerializeToString(), headers=ev.headers())

    def contact_pb(self, cid: str, version: int, **fields: Any) -> cpb.Contact:
        consent = fields.pop("consent", "granted")
        cf = fields.pop("custom_fields", None)
        created = fields.pop("created_at", self.T0)
        values: dict[str, Any] = {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": f"{cid[:8]}@example.com",
            "lifecycle_stage": "lead",
        }
        values.update(fields)
        c = cpb.Contact(
            id=cid, version=version, created_at=_ts(created), updated_at=_ts(created), **values
        )
        status = {
            "granted": cpb.CONSENT_STATUS_GRANTED,
            "denied": cpb.CONSENT_STATUS_DENIED,
            "unknown": cpb.CONSENT_STATUS_UNKNOWN,
        }[consent]
        c.consent.CopyFrom(cpb.Consent(email_marketing=status, legal_basis="consent"))
        if cf:
            s = Struct()
            s.update(cf)
            c.custom_fields.CopyFrom(s)
        return c

    async def contact(self, tenant: str = "acme", cid: str | None = None, **fields: Any) -> str:
        """Publish contact.created (first time) or contact.updated for `cid`."""
        cid = cid or str(uuid.uuid4())
        version = self._next(cid)
        c = self.contact_pb(cid, version, **fields)
        meta = self._meta(tenant, cid, version)
        msg: Any = (
            cpb.ContactCreated(meta=meta, contact=c)
            if version == 1
            else cpb.ContactUpdated(meta=meta, contact=c)
        )
        await self._publish(msg, tenant, cid, version, "crm/contacts")
        return cid

    async def erased(self, tenant: str, cid: str) -> None:
        version = self._next(cid)
        await self._publish(
            cpb.ContactErased(meta=self._meta(tenant, cid, version)),
            tenant,
            cid,
            version,
            "crm/contacts",
        )

    async def deleted(self, tenant: str, cid: str) -> None:
        version = self._next(cid)
        await self._publish(
            cpb.ContactDeleted(meta=self._meta(tenant, cid, version)),
            tenant,
            cid,
            version,
            "crm/contacts",
        )

    async def merged(self, tenant: str, survivor: str, losers: list[str], **fields: Any) -> None:
        version = self._next(survivor)
        msg = cpb.ContactMerged(
            meta=self._meta(tenant, survivor, version),
            survivor_id=survivor,
            merged_ids=losers,
            survivor=self.contact_pb(survivor, version, **fields),
        )
        await self._publish(msg, tenant, survivor, version, "crm/contacts")

    def deal(
        self,
        did: str,
        contact_id: str,
        amount: str,
        version: int,
        status: str,
        closed: datetime | None,
    ) -> ppb.Deal:
        d = ppb.Deal(
            id=did,
            name="Deal",
            contact_id=contact_id,
            owner_id="user-1",
            amount=Money(amount=amount, currency="USD"),
            status=status,
            version=version,
        )
        if closed:
            d.closed_at.CopyFrom(_ts(closed))
        return d

    async def deal_won(
        self,
        tenant: str,
        contact_id: str,
        amount: str,
        did: str | None = None,
        closed: datetime | None = None,
    ) -> str:
        did = did or str(uuid.uuid4())
        version = self._next(did)
        deal = self.deal(did, contact_id, amount, version, "won", closed or datetime.now(UTC))
        await self._publish(
            ppb.DealWon(meta=self._meta(tenant, did, version), deal=deal),
            tenant,
            did,
            version,
            "crm/pipeline",
        )
        return did

    async def deal_reopened(self, tenant: str, contact_id: str, amount: str, did: str) -> None:
        version = self._next(did)
        deal = self.deal(did, contact_id, amount, version, "open", None)
        await self._publish(
            ppb.DealReopened(
                meta=self._meta(tenant, did, version), deal=deal, previous_status="won"
            ),
            tenant,
            did,
            version,
            "crm/pipeline",
        )

    def order(self, oid: str, contact_id: str, amount: str, version: int, status: str) -> ppb.Order:
        o = ppb.Order(
            id=oid,
            contact_id=contact_id,
            number="SO-1",
            amount=Money(amount=amount, currency="USD"),
            status=status,
            version=version,
        )
        o.paid_at.CopyFrom(_ts(datetime.now(UTC) - timedelta(seconds=1)))
        return o

    async def order_paid(
        self, tenant: str, contact_id: str, amount: str, oid: str | None = None
    ) -> str:
        oid = oid or str(uuid.uuid4())
        version = self._next(oid)
        o = self.order(oid, contact_id, amount, version, "paid")
        await self._publish(
            ppb.OrderPaid(meta=self._meta(tenant, oid, version), order=o),
            tenant,
            oid,
            version,
            "crm/pipeline",
        )
        return oid

    async def order_refunded(self, tenant: str, contact_id: str, amount: str, oid: str) -> None:
        version = self._next(oid)
        o = self.order(oid, contact_id, amount, version, "refunded")
        await self._publish(
            ppb.OrderRefunded(meta=self._meta(tenant, oid, version), order=o),
            tenant,
            oid,
            version,
            "crm/pipeline",
        )

    async def wait_contact(self, cid: str, version: int | None = None) -> None:
        want = version or self.versions[cid]

        async def probe() -> bool:
            v = await self.db.fetchval("SELECT version FROM contacts WHERE id = $1", uuid.UUID(cid))
            return v is not None and v >= want

        await wait_for(probe, message=f"contact {cid} v{want} in the replica")


@pytest.fixture
async def upstream(
    app: FastAPI, crm_infra: Infra, db: asyncpg.Connection
) -> AsyncIterator[Upstream]:
    nc = await nats.connect(crm_infra.nats_url)
    try:
        yield Upstream(nc, db)
    finally:
        await nc.close()
