"""Templates, campaigns end to end: segment -> campaign -> .eml in the SMTP sink -> open and
click tracked -> report; consent, unsubscribe, retries, bounces, cancel, exactly-once."""

from __future__ import annotations

import asyncio
import email
import re
import time
import uuid
from email.message import Message
from typing import Any

import asyncpg
from fastapi import FastAPI
from httpx import AsyncClient

from campaigns.app import CampaignsSettings, build
from campaigns.sending import Pacer
from campaigns.smtp_sink import SmtpSink
from chassis.testing import running, wait_for

TEMPLATE = {
    "name": "Welcome",
    "subject": "Hello {{ contact.first_name }}",
    "html": '<p>Hi {{ contact.first_name }} from {{ contact.cf.region }}</p><a href="https://shop.example/offer?a=1&amp;b=2">Offer</a>',
    "text": "Hi {{ contact.first_name }}",
}
BASE = "http://public.test"


def parse(path: Any) -> Message:
    return email.message_from_bytes(path.read_bytes())


def html_of(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    raise AssertionError("no html part")


def links(msg: Message) -> dict[str, str]:
    body = html_of(msg)
    found = {
        kind: re.search(rf'{BASE}(/v1/public/{kind}[^"]+)"', body)
        for kind in ("t/o/", "t/c/", "unsubscribe/")
    }
    return {k: m.group(1) for k, m in found.items() if m}


async def make_campaign(
    client: AsyncClient, tag: str, template: dict[str, Any] | None = None, **extra: Any
) -> str:
    seg = await client.post(
        "/v1/segments",
        json={"name": tag, "filter": {"all": [{"field": "tags", "op": "contains", "value": tag}]}},
    )
    tpl = await client.post("/v1/email-templates", json=template or TEMPLATE)
    assert tpl.status_code == 201, tpl.text
    r = await client.post(
        "/v1/campaigns",
        json={
            "name": f"c-{tag}",
            "segment_id": seg.json()["id"],
            "template_id": tpl.json()["id"],
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def wait_done(client: AsyncClient, cid: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = (await client.get(f"/v1/campaigns/{cid}")).json()
        return r if r["status"] == "sent" else None

    return await wait_for(probe, timeout=15, message="campaign sent")


class TestTemplates:
    async def test_create_and_preview(self, client: AsyncClient) -> None:
        r = await client.post("/v1/email-templates", json=TEMPLATE)
        assert r.status_code == 201
        assert r.headers["ETag"] == '"1"'
        r = await client.post(f"/v1/email-templates/{r.json()['id']}/preview", json={})
        assert r.json()["subject"] == "Hello Ada"

    async def test_rendering_errors_are_422_at_save(
        self, client: AsyncClient, db: asyncpg.Connection
    ) -> None:
        cases = [
            ({**TEMPLATE, "html": "<p>{{ contact.first_name </p>"}, ["html"]),
            ({**TEMPLATE, "subject": "Hi {{ contact.nickname }}"}, ["subject"]),
            ({**TEMPLATE, "text": "{{ secret }}"}, ["text"]),
            ({**TEMPLATE, "text": "{{ contact.__class__.__mro__ }}"}, ["text"]),
        ]
        for body, path in cases:
            r = await client.post("/v1/email-templates", json=body)
            assert r.status_code == 422, body
            assert r.json()["errors"][0]["path"] == path
        assert await db.fetchval("SELECT count(*) FROM email_templates") == 0

    async def test_patch_is_validated_too(self, client: AsyncClient) -> None:
        tid = (await client.post("/v1/email-templates", json=TEMPLATE)).json()["id"]
        r = await client.patch(
            f"/v1/email-templates/{tid}", json={"html": "{% for %}"}, headers={"If-Match": '"1"'}
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["html"]
        r = await client.get(f"/v1/email-templates/{tid}")
        assert r.json()["html"] == TEMPLATE["html"]


class TestCampaignFlow:
    async def test_segment_to_eml_to_tracking_to_report(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink, db: asyncpg.Connection
    ) -> None:
        a = await upstream.contact(
            tags=["wave"], first_name="Ada", custom_fields={"region": "EMEA"}
        )
        b = await upstream.contact(tags=["wave"], first_name="Bob")
        denied = await upstream.contact(tags=["wave"], first_name="Dan", consent="denied")
        unknown = await upstream.contact(tags=["wave"], first_name="Una", consent="unknown")
        for c in (a, b, denied, unknown):
            await upstream.wait_contact(c)
        model = {
            "name": "engagement",
            "rules": [{"on": "email.opened", "points": 5}, {"on": "email.clicked", "points": 20}],
            "threshold": "100",
        }
        assert (await client.post("/v1/scoring-models", json=model)).status_code == 201
        cid = await make_campaign(client, "wave")
        r = await client.post(f"/v1/campaigns/{cid}/schedule", json={})
        assert r.status_code == 200
        assert r.json()["status"] == "scheduled"
        done = await wait_done(client, cid)
        assert done["recipients"] == 2
        mails = sink.messages()
        assert len(mails) == 2
        by_to = {parse(m)["To"]: parse(m) for m in mails}
        ada = by_to[f"{a[:8]}@example.com"]
        assert ada["Subject"] == "Hello Ada"
        assert "from EMEA" in html_of(ada)
        assert ada["List-Unsubscribe"].startswith(f"<{BASE}/v1/public/unsubscribe/")
        urls = links(ada)
        assert set(urls) == {"t/o/", "t/c/", "unsubscribe/"}
        # open twice (one unique), click once
        for _ in range(2):
            r = await client.get(urls["t/o/"], headers={"Authorization": ""})
            assert r.status_code == 200
            assert r.headers["content-type"] == "image/gif"
        r = await client.get(urls["t/c/"], headers={"Authorization": ""})
        assert r.status_code == 302
        assert r.headers["location"] == "https://shop.example/offer?a=1&b=2"
        report = (await client.get(f"/v1/campaigns/{cid}/report")).json()
        assert (report["recipients"], report["sent"], report["failed"]) == (2, 2, 0)
        assert (report["unique_opens"], report["opens"], report["unique_clicks"]) == (1, 2, 1)
        assert report["open_rate"] == "0.5000"
        assert report["click_rate"] == "0.5000"
        types = [
            r["ce_type"]
            for r in await db.fetch(
                "SELECT ce_type FROM outbox WHERE aggregate_id = (SELECT id::text FROM deliveries "
                "WHERE contact_id = $1) ORDER BY aggregate_version",
                uuid.UUID(a),
            )
        ]
        assert types[:3] == [
            "crm.campaigns.email.sent.v1",
            "crm.campaigns.email.delivered.v1",
            "crm.campaigns.email.opened.v1",
        ]
        assert "crm.campaigns.email.clicked.v1" in types
        # first open and first click scored once each
        scores = (await client.get(f"/v1/contacts/{a}/scores")).json()
        assert scores[0]["score"] == "25.00"
        # the engagement is visible to segment filters
        r = await client.post(
            "/v1/segments/preview",
            json={"filter": {"all": [{"field": "engagement.clicked", "op": "eq", "value": cid}]}},
        )
        assert [m["contact_id"] for m in r.json()["items"]] == [a]

    async def test_tampered_tokens_are_404(self, client: AsyncClient) -> None:
        r = await client.get("/v1/public/t/c/bm90LWEtdG9rZW4.abc")
        assert r.status_code == 404
        r = await client.post("/v1/public/unsubscribe/bm90LWEtdG9rZW4.abc")
        assert r.status_code == 404
        r = await client.get("/v1/public/t/o/garbage")
        assert r.status_code == 200  # the pixel never breaks an email

    async def test_unsubscribed_contact_gets_nothing(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink, db: asyncpg.Connection
    ) -> None:
        a = await upstream.contact(tags=["news"])
        b = await upstream.contact(tags=["news"])
        await upstream.wait_contact(a)
        await upstream.wait_contact(b)
        first = await make_campaign(client, "news")
        await client.post(f"/v1/campaigns/{first}/schedule")
        await wait_done(client, first)
        mail_b = next(m for m in sink.messages() if parse(m)["To"] == f"{b[:8]}@example.com")
        unsub = links(parse(mail_b))["unsubscribe/"]
        page = await client.get(unsub)
        assert page.status_code == 200
        assert "<form" in page.text
        assert await db.fetchval("SELECT count(*) FROM suppressions") == 0  # GET changes nothing
        for _ in range(2):  # idempotent
            r = await client.post(unsub)
            assert r.status_code == 200
        withdrawn = await db.fetch(
            "SELECT aggregate_id, aggregate_version FROM outbox WHERE ce_type = "
            "'crm.campaigns.consent.withdrawn.v1'"
        )
        assert [(w["aggregate_id"], w["aggregate_version"]) for w in withdrawn] == [(b, 1)]
        second = await make_campaign(client, "news")
        await client.post(f"/v1/campaigns/{second}/schedule")
        done = await wait_done(client, second)
        assert done["recipients"] == 1
        tos = [parse(m)["To"] for m in sink.messages()]
        assert tos.count(f"{b[:8]}@example.com") == 1
        assert tos.count(f"{a[:8]}@example.com") == 2
        report = (await client.get(f"/v1/campaigns/{first}/report")).json()
        assert report["unsubscribes"] == 1

    async def test_erased_contact_is_never_sent_to(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink
    ) -> None:
        a = await upstream.contact(tags=["gdpr"])
        b = await upstream.contact(tags=["gdpr"])
        await upstream.erased("acme", b)
        await upstream.wait_contact(a)
        await upstream.wait_contact(b, 2)
        cid = await make_campaign(client, "gdpr")
        await client.post(f"/v1/campaigns/{cid}/schedule")
        await wait_done(client, cid)
        assert [parse(m)["To"] for m in sink.messages()] == [f"{a[:8]}@example.com"]

    async def test_transient_failures_are_retried_and_refusals_bounce(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink, db: asyncpg.Connection
    ) -> None:
        ok = await upstream.contact(tags=["retry"])
        bad = await upstream.contact(tags=["retry"])
        await upstream.wait_contact(ok)
        await upstream.wait_contact(bad)
        sink.reject.add(f"{bad[:8]}@example.com")
        sink.fail_next = 2
        cid = await make_campaign(client, "retry")
        await client.post(f"/v1/campaigns/{cid}/schedule")
        await wait_done(client, cid)
        rows = {str(r["contact_id"]): r for r in await db.fetch("SELECT * FROM deliveries")}
        assert rows[ok]["status"] == "sent"
        assert rows[ok]["attempts"] == 3
        assert rows[bad]["status"] == "bounced"
        assert "550" in rows[bad]["last_error"]
        assert len(sink.messages()) == 1
        report = (await client.get(f"/v1/campaigns/{cid}/report")).json()
        assert (report["sent"], report["failed"], report["bounced"], report["bounce_rate"]) == (
            1,
            1,
            1,
            "0.5000",
        )
        bounced = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE ce_type = 'crm.campaigns.email.bounced.v1'"
        )
        assert bounced == 1
        # the hard-bounced address is suppressed: the next campaign skips it
        sink.reject.clear()
        again = await make_campaign(client, "retry")
        await client.post(f"/v1/campaigns/{again}/schedule")
        assert (await wait_done(client, again))["recipients"] == 1
        assert len(sink.messages()) == 2

    async def test_cancel_before_send_at(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink
    ) -> None:
        a = await upstream.contact(tags=["later"])
        await upstream.wait_contact(a)
        cid = await make_campaign(client, "later", send_at="2099-01-01T00:00:00Z")
        r = await client.post(f"/v1/campaigns/{cid}/schedule")
        assert r.json()["send_at"].startswith("2099-01-01")
        r = await client.post(f"/v1/campaigns/{cid}/cancel")
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        r = await client.post(f"/v1/campaigns/{cid}/schedule")
        assert r.status_code == 409
        assert sink.messages() == []

    async def test_bad_references_are_422(
        self, client: AsyncClient, db: asyncpg.Connection
    ) -> None:
        r = await client.post(
            "/v1/campaigns",
            json={"name": "x", "segment_id": str(uuid.uuid4()), "template_id": str(uuid.uuid4())},
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["segment_id"]
        r = await client.post(
            "/v1/campaigns",
            json={"name": "x", "segment_id": "nope", "template_id": str(uuid.uuid4())},
        )
        assert r.status_code == 422
        assert r.json()["errors"][0]["path"] == ["segment_id"]
        assert await db.fetchval("SELECT count(*) FROM campaigns") == 0


class TestExactlyOnce:
    async def test_one_email_per_recipient_across_restarts_and_replays(
        self,
        app: FastAPI,
        settings: CampaignsSettings,
        client: AsyncClient,
        upstream: Any,
        sink: SmtpSink,
        db: asyncpg.Connection,
    ) -> None:
        cids = [await upstream.contact(tags=["once"]) for _ in range(30)]
        for c in cids:
            await upstream.wait_contact(c)
        cid = await make_campaign(client, "once")
        await client.post(f"/v1/campaigns/{cid}/schedule")
        await wait_done(client, cid)
        assert len(sink.messages()) == 30
        # a replayed start (a second replica claiming the same campaign) adds nobody
        await db.execute("UPDATE campaigns SET status = 'scheduled' WHERE id = $1", uuid.UUID(cid))
        second = build(settings)
        async with running(second):
            await wait_for(
                lambda: db.fetchval(
                    "SELECT status = 'sent' FROM campaigns WHERE id = $1", uuid.UUID(cid)
                ),
                message="replayed campaign finished",
            )
        await asyncio.sleep(0.3)
        assert await db.fetchval("SELECT count(*) FROM deliveries") == 30
        assert len(sink.messages()) == 30
        tos = [parse(m)["To"] for m in sink.messages()]
        assert len(set(tos)) == 30


class TestThrottle:
    async def test_pacer_limits_the_rate(self) -> None:
        pacer = Pacer(50)
        start = time.monotonic()
        for _ in range(11):
            await pacer.wait()
        assert time.monotonic() - start >= 0.19


class TestAttribution:
    async def test_report_counts_deals_won_by_recipients_within_30_days(
        self, client: AsyncClient, upstream: Any, db: asyncpg.Connection
    ) -> None:
        from datetime import UTC, datetime, timedelta

        a = await upstream.contact(tags=["attr"])
        b = await upstream.contact(tags=["attr"])
        outsider = await upstream.contact(tags=["other"])
        for c in (a, b, outsider):
            await upstream.wait_contact(c)
        cid = await make_campaign(client, "attr")
        await client.post(f"/v1/campaigns/{cid}/schedule")
        await wait_done(client, cid)
        await upstream.deal_won("acme", a, "1200.50")
        await upstream.deal_won(
            "acme", b, "999", closed=datetime.now(UTC) - timedelta(days=1)
        )  # before the email
        await upstream.deal_won(
            "acme", b, "10", closed=datetime.now(UTC) + timedelta(days=31)
        )  # too late
        await upstream.deal_won("acme", outsider, "5000")
        await wait_for(
            lambda: db.fetchval("SELECT count(*) = 4 FROM deal_outcomes"),
            message="deals replicated",
        )
        report = (await client.get(f"/v1/campaigns/{cid}/report")).json()
        assert report["deals_won"] == {
            "count": 1,
            "amounts": [{"amount": "1200.50", "currency": "USD"}],
        }


class TestPublishedContract:
    async def test_consent_withdrawn_reaches_nats(
        self, client: AsyncClient, upstream: Any, sink: SmtpSink, crm_infra: Any
    ) -> None:
        import nats

        from chassis.events import IncomingEvent
        from crm.campaigns.v1.campaigns_pb2 import ConsentWithdrawn

        a = await upstream.contact(tags=["nats"])
        await upstream.wait_contact(a)
        cid = await make_campaign(client, "nats")
        await client.post(f"/v1/campaigns/{cid}/schedule")
        await wait_done(client, cid)
        unsub = links(parse(sink.messages()[0]))["unsubscribe/"]
        assert (await client.post(unsub)).status_code == 200
        nc = await nats.connect(crm_infra.nats_url)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe(
                "crm.campaigns.acme.consent.withdrawn", durable=None, stream="CRM_CAMPAIGNS"
            )
            msgs = await sub.fetch(1, timeout=10)
            ev = IncomingEvent.from_nats(msgs[0].subject, msgs[0].headers, msgs[0].data)
        finally:
            await nc.close()
        assert (ev.type, ev.aggregate_id, ev.version) == (
            "crm.campaigns.consent.withdrawn.v1",
            a,
            1,
        )
        msg = ev.parse(ConsentWithdrawn)
        assert (msg.contact_id, msg.channel, msg.meta.tenant_id) == (a, "email_marketing", "acme")
        assert msg.HasField("at")
