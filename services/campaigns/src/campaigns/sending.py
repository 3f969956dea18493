"""Campaign sending on durable timers (chassis.scheduler):

- the *starter* claims scheduled campaigns whose send_at is due and materializes one delivery
  row per eligible recipient with one INSERT ... SELECT (unique per campaign and contact, so
  a restart or a second replica never creates a second one);
- the *sender* claims due pending deliveries (FOR UPDATE SKIP LOCKED), re-checks consent,
  renders, sends them over a few SMTP connections with a rate limit, and records the outcome
  in the same transaction: sent (events sent + delivered), a transient failure (retry with
  exponential backoff until `send_max_attempts`, then failed + bounced event), or a permanent
  5xx refusal (bounced). A delivery is only ever claimed while pending, so each recipient
  gets one email; the crash window is between the SMTP server's 250 and our commit, where the
  email would be sent again after restart with the same Message-ID.

Eligible = active contact with an email, consent.email_marketing = granted, and no local
unsubscribe newer than the contact's consent (`suppressions`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

import aiosmtplib
from fastapi import FastAPI
from jinja2 import TemplateError
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import rendering, segments
from campaigns.common import Actor, Row, emit, execute, one, rows
from campaigns.settings import CampaignsSettings
from campaigns.tokens import Tokens
from chassis import outbox
from chassis.db import Database
from chassis.scheduler import Scheduler
from crm.campaigns.v1 import campaigns_pb2 as pb

log = logging.getLogger("campaigns.sending")

ELIGIBLE = (
    "c.email IS NOT NULL AND c.email_marketing = 'granted' AND NOT EXISTS (SELECT 1 FROM "
    "suppressions s WHERE s.tenant_id = c.tenant_id AND s.contact_id = c.id AND ((s.channel = "
    "'email_marketing' AND s.at >= COALESCE(c.consent_updated_at, '-infinity'::timestamptz)) "
    "OR (s.channel = 'email_bounced' AND s.email = c.email)))"
)


def system_actor(tenant: str, what: str) -> Actor:
    return Actor(tenant, f"system:{what}", f"crm/campaigns:{what}")


def campaign_message(row: Row) -> pb.Campaign:
    c = pb.Campaign(
        id=str(row["id"]),
        name=row["name"],
        segment_id=str(row["segment_id"]),
        template_id=str(row["template_id"]),
        status=row["status"],
        recipients=row["recipients"],
        version=row["version"],
    )
    if row["send_at"] is not None:
        c.send_at.FromDatetime(row["send_at"])
    return c


def email_message(row: Row) -> pb.Email:
    return pb.Email(
        id=str(row["id"]),
        campaign_id=str(row["campaign_id"] or ""),
        sequence_id=str(row["sequence_id"] or ""),
        contact_id=str(row["contact_id"]),
        subject=row.get("subject") or "",
        status=row["status"],
        version=row["version"],
    )


# --- starter --------------------------------------------------------------------------------


async def start_due_campaigns(session: AsyncSession, now: datetime, limit: int) -> int:
    due = await rows(
        session,
        "SELECT * FROM campaigns WHERE status = 'scheduled' AND COALESCE(send_at, created_at) <= "
        ":now "
        "AND deleted_at IS NULL ORDER BY send_at NULLS FIRST LIMIT :limit FOR UPDATE SKIP LOCKED",
        {"now": now, "limit": limit},
    )
    for campaign in due:
        await materialize(session, campaign, now)
    return len(due)


async def materialize(session: AsyncSession, campaign: Row, now: datetime) -> Row:
    tenant = campaign["tenant_id"]
    segment = await one(
        session,
        "SELECT * FROM segments WHERE tenant_id = :t AND id = :i AND deleted_at IS NULL",
        {"t": tenant, "i": campaign["segment_id"]},
    )
    recipients = 0
    if segment is not None:
        cond = await segments.condition(session, segment, now)
        recipients = await execute(
            session,
            "INSERT INTO deliveries (tenant_id, id, campaign_id, template_id, contact_id, email, "
            "status, next_attempt_at, created_at) SELECT c.tenant_id, gen_random_uuid(), :cid, "
            ":tid, c.id, c.email, 'pending', :now, :now FROM contacts c WHERE c.tenant_id = "
            ":tenant "
            f"AND {cond.sql} AND {ELIGIBLE} ON CONFLICT DO NOTHING",
            {
                **cond.params,
                "tenant": tenant,
                "cid": campaign["id"],
                "tid": campaign["template_id"],
                "now": now,
            },
        )
    saved = await one(
        session,
        "UPDATE campaigns SET status = 'sending', recipients = recipients + :n, started_at = :now, "
        "updated_at = :now, version = version + 1 WHERE tenant_id = :t AND id = :i RETURNING *",
        {"n": recipients, "now": now, "t": tenant, "i": campaign["id"]},
    )
    assert saved is not None
    emit(
        session,
        system_actor(tenant, "sender"),
        pb.CampaignChanged(change="started", campaign=campaign_message(saved)),
        saved["id"],
        saved["version"],
        ["status", "recipients"],
    )
    return saved


async def next_campaign(session: AsyncSession) -> datetime | None:
    row = await one(
        session,
        "SELECT min(COALESCE(send_at, created_at)) AS due FROM campaigns WHERE status = "
        "'scheduled'",
    )
    return row["due"] if row else None


# --- sender ---------------------------------------------------------------------------------


class Pacer:
    """At most `rate` sends per second across the sender's connections (0 = unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_slot = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self.next_slot)
        self.next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass
class Outcome:
    sent: list[Row] = field(default_factory=list)
    retry: list[tuple[Row, str]] = field(default_factory=list)
    bounced: list[tuple[Row, str]] = field(default_factory=list)
    skipped: list[Row] = field(default_factory=list)
    failed: list[tuple[Row, str]] = field(default_factory=list)


class Sender:
    def __init__(self, settings: CampaignsSettings) -> None:
        self.settings = settings
        self.tokens = Tokens(settings.signing_secret, settings.public_base_url)
        self.pacer = Pacer(settings.send_rate_per_second)
        self.envelope_from = parseaddr(settings.mail_from)[1]

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            start_tls=s.smtp_starttls,
            timeout=s.smtp_timeout_seconds,
        )

    async def fire(self, session: AsyncSession, now: datetime, limit: int) -> int:
        claimed = await rows(
            session,
            "SELECT d.*, cp.name AS campaign_name, cp.status AS campaign_status, "
            "sq.name AS sequence_name FROM deliveries d "
            "LEFT JOIN campaigns cp ON cp.tenant_id = d.tenant_id AND cp.id = d.campaign_id "
            "LEFT JOIN sequences sq ON sq.tenant_id = d.tenant_id AND sq.id = d.sequence_id "
            "WHERE d.status = 'pending' AND d.next_attempt_at <= :now "
            "ORDER BY d.next_attempt_at LIMIT :limit FOR UPDATE OF d SKIP LOCKED",
            {"now": now, "limit": limit},
        )
        if claimed:
            await self._process(session, claimed, now)
        await finish_campaigns(session, now)
        return len(claimed)

    async def _process(self, session: AsyncSession, claimed: list[Row], now: datetime) -> None:
        keys = [(d["tenant_id"], d["contact_id"]) for d in claimed]
        contacts = {
            (r["tenant_id"], r["id"]): r
            for r in await rows(
                session,
                "SELECT c.*, (" + ELIGIBLE + ") AS eligible FROM contacts c JOIN unnest("
                "CAST(:ts AS text[]), CAST(:ids AS uuid[])) AS k(t, i) ON c.tenant_id = k.t AND "
                "c.id = k.i",
                {"ts": [k[0] for k in keys], "ids": [k[1] for k in keys]},
            )
        }
        templates = {
            (r["tenant_id"], r["id"]): r
            for r in await rows(
                session,
                "SELECT t.* FROM email_templates t JOIN unnest(CAST(:ts AS text[]), CAST(:ids AS "
                "uuid[])) "
                "AS k(t, i) ON t.tenant_id = k.t AND t.id = k.i",
                {
                    "ts": [d["tenant_id"] for d in claimed],
                    "ids": [d["template_id"] for d in claimed],
                },
            )
        }
        outcome = Outcome()
        ready: list[tuple[Row, Any]] = []
        for d in claimed:
            contact = contacts.get((d["tenant_id"], d["contact_id"]))
            template = templates.get((d["tenant_id"], d["template_id"]))
            active = (
                contact is not None
                and contact["deleted_at"] is None
                and contact["erased_at"] is None
                and contact["merged_into_id"] is None
            )
            if (
                d["campaign_status"] == "cancelled"
                or not active
                or not contact["eligible"]  # type: ignore[index]
                or template is None
            ):
                outcome.skipped.append(d)
                continue
            assert contact is not None
            try:
                ready.append((d, self._message(d, contact, template)))
            except TemplateError as e:
                outcome.failed.append((d, f"rendering: {e}"))
        await self._send_all(ready, outcome)
        await record(session, outcome, now, self.settings)

    def _message(self, d: Row, contact: Row, template: Row) -> Any:
        tenant, did = d["tenant_id"], d["id"]
        unsubscribe = self.tokens.unsubscribe_url(tenant, did)
        name = d.get("campaign_name") or d.get("sequence_name") or ""
        r = rendering.render(template, rendering.variables(contact, name, unsubscribe))
        tracked = rendering.with_tracking(
            r,
            click=lambda url: self.tokens.click_url(tenant, did, url),
            pixel_url=self.tokens.open_url(tenant, did),
            unsubscribe_url=unsubscribe,
        )
        d["subject"] = tracked.subject
        return rendering.build_message(
            sender=self.settings.mail_from,
            to=d["email"],
            rendered=tracked,
            message_id=f"<{did}@campaigns.crm>",
            unsubscribe_url=unsubscribe,
        )

    async def _send_all(self, ready: list[tuple[Row, Any]], outcome: Outcome) -> None:
        if not ready:
            return
        n = max(1, min(self.settings.smtp_connections, len(ready)))
        shares = [ready[i::n] for i in range(n)]
        await asyncio.gather(*(self._send_share(share, outcome) for share in shares))

    async def _send_share(self, share: list[tuple[Row, Any]], outcome: Outcome) -> None:
        client: aiosmtplib.SMTP | None = None
        try:
            for d, message in share:
                await self.pacer.wait()
                try:
                    if client is None or not client.is_connected:
                        client = self._client()
                        await client.connect()
                    await client.sendmail(self.envelope_from, [d["email"]], message)
                    outcome.sent.append(d)
                except aiosmtplib.SMTPRecipientsRefused as e:
                    codes = [r.code for r in e.recipients]
                    reason = "; ".join(f"{r.code} {r.message}" for r in e.recipients)
                    if codes and all(500 <= c < 600 for c in codes):
                        outcome.bounced.append((d, reason))
                    else:
                        outcome.retry.append((d, reason))
                except aiosmtplib.SMTPResponseException as e:
                    reason = f"{e.code} {e.message}"
                    if 500 <= e.code < 600:
                        outcome.bounced.append((d, reason))
                    else:
                        outcome.retry.append((d, reason))
                    await _reset(client)
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
                    outcome.retry.append((d, f"{type(e).__name__}: {e}"))
                    await _close(client)
                    client = None
        finally:
            if client is not None:
                await _quit(client)


async def _reset(client: aiosmtplib.SMTP | None) -> None:
    if client is not None and client.is_connected:
        try:
            await client.rset()
        except Exception:
            await _close(client)


async def _close(client: aiosmtplib.SMTP | None) -> None:
    if client is not None:
        try:
            client.close()
        except Exception:
            log.debug("closing SMTP connection failed", exc_info=True)


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit()
    except Exception:
        await _close(client)


async def _update(
    session: AsyncSession, sql: str, items: list[Row], extra: dict[str, Any]
) -> list[Row]:
    if not items:
        return []
    return await rows(
        session,
        sql,
        {"ts": [d["tenant_id"] for d in items], "ids": [d["id"] for d in items], **extra},
    )


async def record(
    session: AsyncSession, outcome: Outcome, now: datetime, settings: CampaignsSettings
) -> None:
    """Write the outcome of a batch: a few set-based statements and one event per version."""
    subjects = {d["id"]: d.get("subject") for d in outcome.sent}
    sent = await _update(
        session,
        "UPDATE deliveries d SET status = 'sent', sent_at = :now, attempts = attempts + 1, "
        "subject = s.subject, last_error = NULL, version = version + 2 FROM (SELECT k.t, k.i, "
        "k.s AS subject FROM unnest(CAST(:ts AS text[]), CAST(:ids AS uuid[]), CAST(:subjects AS "
        "text[])) "
        "AS k(t, i, s)) AS s WHERE d.tenant_id = s.t AND d.id = s.i RETURNING d.*",
        outcome.sent,
        {"now": now, "subjects": [subjects[d["id"]] for d in outcome.sent]},
    )
    for d in sent:
        actor = system_actor(d["tenant_id"], "sender")
        d_sent = {**d, "version": d["version"] - 1}
        emit(session, actor, pb.EmailSent(email=email_message(d_sent)), d["id"], d["version"] - 1)
        emit(session, actor, pb.EmailDelivered(email=email_message(d)), d["id"], d["version"])
    if outcome.skipped:
        await _update(
            session,
            "UPDATE deliveries d SET status = 'skipped', last_error = 'not eligible at send time' "
            "FROM unnest(CAST(:ts AS text[]), CAST(:ids AS uuid[])) AS k(t, i) "
            "WHERE d.tenant_id = k.t AND d.id = k.i RETURNING d.id",
            outcome.skipped,
            {},
        )
    if outcome.failed:
        errors = {d["id"]: e for d, e in outcome.failed}
        await _update(
            session,
            "UPDATE deliveries d SET status = 'failed', attempts = attempts + 1, last_error = k.e "
            "FROM "
            "unnest(CAST(:ts AS text[]), CAST(:ids AS uuid[]), CAST(:errs AS text[])) AS k(t, i, "
            "e) "
            "WHERE d.tenant_id = k.t AND d.id = k.i RETURNING d.id",
            [d for d, _ in outcome.failed],
            {"errs": [errors[d["id"]][:1000] for d, _ in outcome.failed]},
        )
    retry_due = [(d, e) for d, e in outcome.retry if d["attempts"] + 1 < settings.send_max_attempts]
    exhausted = [
        (d, e) for d, e in outcome.retry if d["attempts"] + 1 >= settings.send_max_attempts
    ]
    if retry_due:
        await _update(
            session,
            "UPDATE deliveries d SET attempts = attempts + 1, last_error = k.e, next_attempt_at = "
            "k.at "
            "FROM unnest(CAST(:ts AS text[]), CAST(:ids AS uuid[]), CAST(:errs AS text[]), "
            "CAST(:ats AS timestamptz[])) AS k(t, i, e, at) WHERE d.tenant_id = k.t AND d.id = k.i "
            "RETURNING d.id",
            [d for d, _ in retry_due],
            {
                "errs": [e[:1000] for _, e in retry_due],
                "ats": [
                    now + timedelta(seconds=settings.send_retry_base_seconds * 2 ** d["attempts"])
                    for d, _ in retry_due
                ],
            },
        )
    for items, permanent, status in (
        (outcome.bounced, True, "bounced"),
        (exhausted, False, "failed"),
    ):
        if not items:
            continue
        reasons = {d["id"]: e for d, e in items}
        for d in await _update(
            session,
            f"UPDATE deliveries d SET status = '{status}', attempts = attempts + 1, last_error = "
            "k.e, "
            "version = version + 1 FROM unnest(CAST(:ts AS text[]), CAST(:ids AS uuid[]), "
            "CAST(:errs AS text[])) AS k(t, i, e) WHERE d.tenant_id = k.t AND d.id = k.i RETURNING "
            "d.*",
            [d for d, _ in items],
            {"errs": [reasons[d["id"]][:1000] for d, _ in items]},
        ):
            if permanent:  # a hard bounce: never send to this address again
                await execute(
                    session,
                    "INSERT INTO suppressions (tenant_id, contact_id, channel, at, email) VALUES "
                    "(:t, :c, 'email_bounced', :now, :e) ON CONFLICT (tenant_id, contact_id, "
                    "channel) "
                    "DO UPDATE SET at = EXCLUDED.at, email = EXCLUDED.email",
                    {"t": d["tenant_id"], "c": d["contact_id"], "now": now, "e": d["email"]},
                )
            emit(
                session,
                system_actor(d["tenant_id"], "sender"),
                pb.EmailBounced(
                    email=email_message(d), reason=reasons[d["id"]][:1000], permanent=permanent
                ),
                d["id"],
                d["version"],
            )


async def finish_campaigns(session: AsyncSession, now: datetime) -> None:
    done = await rows(
        session,
        "UPDATE campaigns cp SET status = 'sent', finished_at = :now, updated_at = :now, "
        "version = version + 1 WHERE cp.status = 'sending' AND NOT EXISTS (SELECT 1 FROM "
        "deliveries d "
        "WHERE d.tenant_id = cp.tenant_id AND d.campaign_id = cp.id AND d.status = 'pending') "
        "RETURNING cp.*",
        {"now": now},
    )
    for c in done:
        emit(
            session,
            system_actor(c["tenant_id"], "sender"),
            pb.CampaignChanged(change="finished", campaign=campaign_message(c)),
            c["id"],
            c["version"],
            ["status"],
        )


async def next_delivery(session: AsyncSession) -> datetime | None:
    row = await one(
        session, "SELECT min(next_attempt_at) AS due FROM deliveries WHERE status = 'pending'"
    )
    return row["due"] if row else None


# --- lifecycle ------------------------------------------------------------------------------


class Loops:
    """The service's schedulers; each is woken after every commit that wrote events (a
    campaign scheduled, an enrollment created...), never before that commit."""

    def __init__(self) -> None:
        self.all: dict[str, Scheduler] = {}
        self._unhook: Callable[[], None] | None = None

    def wake_all(self) -> None:
        for s in self.all.values():
            s.wake()

    async def start(self) -> None:
        self._unhook = outbox.on_commit(self.wake_all)
        for s in self.all.values():
            await s.start()

    async def stop(self) -> None:
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        for s in self.all.values():
            await s.stop()


def loops(app: FastAPI) -> Loops:
    found: Loops | None = getattr(app.state, "campaign_loops", None)
    if found is None:
        found = Loops()
        app.state.campaign_loops = found
    return found


async def add_sending_loops(app: FastAPI) -> None:
    settings: CampaignsSettings = app.state.settings
    db: Database = app.state.db
    sender = Sender(settings)
    poll = settings.scheduler_poll_seconds
    found = loops(app)
    found.all["starter"] = Scheduler(
        "campaign-starter",
        db,
        start_due_campaigns,
        next_due=next_campaign,
        poll_seconds=poll,
        batch_size=10,
    )
    found.all["sender"] = Scheduler(
        "email-sender",
        db,
        sender.fire,
        next_due=next_delivery,
        poll_seconds=poll,
        batch_size=settings.send_batch_size,
    )


async def start_loops(app: FastAPI) -> None:
    await loops(app).start()


async def stop_loops(app: FastAPI) -> None:
    await loops(app).stop()
