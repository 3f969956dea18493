"""CSAT (one survey per solved ticket) and NPS (one invitation per contact), answered through
public, token-authenticated endpoints.

A token is HMAC-SHA256(survey_secret, "<kind>:<tenant>:<id>") in base64url: unguessable
without the secret, and re-derivable so the ticket can show its survey link. Only
SHA-256(token) is stored; the public endpoints find the row (and so the tenant) by that hash.
A token works once (the answer is written with `answered_at IS NULL` under a row lock) and
expires (`expires_at`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from chassis.problems import Conflict, Forbidden, NotFound, ProblemError
from crm.tickets.v1 import tickets_pb2 as pb
from tickets import events
from tickets.access import Caller
from tickets.settings import TicketsSettings

Row = dict[str, Any]


class SurveyNotFound(NotFound):
    title = "Survey not found"


class SurveyAnswered(Conflict):
    title = "Survey already answered"


class SurveyExpired(ProblemError):
    status, title = 410, "Survey expired"


def make_token(secret: str, kind: str, tenant: str, survey_id: uuid.UUID | str) -> str:
    mac = hmac.new(secret.encode(), f"{kind}:{tenant}:{survey_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def survey_url(settings: TicketsSettings, kind: str, token: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/v1/public/{kind}/{token}"


def nps_category(score: int) -> str:
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


# --- CSAT ------------------------------------------------------------------------------------


async def request_csat(
    session: AsyncSession, settings: TicketsSettings, caller: Caller, ticket: Row, now: datetime
) -> None:
    """On solve: a new survey unless one is still open (requested and not expired)."""
    open_one = (
        await session.execute(
            text(
                "SELECT 1 FROM csat_surveys WHERE tenant_id = :t AND ticket_id = :id "
                "AND answered_at IS NULL AND expires_at > :now LIMIT 1"
            ),
            {"t": caller.tenant, "id": ticket["id"], "now": now},
        )
    ).first()
    if open_one:
        return
    sid = uuid.uuid4()
    token = make_token(settings.survey_secret, "csat", caller.tenant, sid)
    expires = now + timedelta(hours=settings.csat_token_ttl_hours)
    await session.execute(
        text(
            "INSERT INTO csat_surveys (tenant_id, id, ticket_id, contact_id, assignee_id, "
            "group_id, "
            "token_hash, expires_at, created_at, version) VALUES (:t, :id, :ticket, :contact, "
            ":assignee, :grp, :hash, :exp, :now, 1)"
        ),
        {
            "t": caller.tenant,
            "id": sid,
            "ticket": ticket["id"],
            "contact": ticket["requester_contact_id"],
            "assignee": ticket["assignee_id"],
            "grp": ticket["group_id"],
            "hash": token_hash(token),
            "exp": expires,
            "now": now,
        },
    )
    events.emit(
        session,
        pb.CsatRequested(
            ticket_id=str(ticket["id"]),
            contact_id=events.s(ticket["requester_contact_id"]),
            survey_url=survey_url(settings, "csat", token),
            expires_at=events.ts(expires),
            assignee_id=events.s(ticket["assignee_id"]),
            group_id=events.s(ticket["group_id"]),
        ),
        tenant=caller.tenant,
        aggregate_id=sid,
        version=1,
        actor=caller.sub,
        origin=caller.origin,
        occurred_at=now,
    )


async def csat_views(
    session: AsyncSession, settings: TicketsSettings, tenant: str, ticket_ids: Sequence[Any]
) -> dict[Any, dict[str, Any]]:
    """The latest CSAT survey of each ticket, as the ticket shows it."""
    if not ticket_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT DISTINCT ON (ticket_id) ticket_id, id, expires_at, score, comment, "
            "answered_at FROM csat_surveys WHERE tenant_id = :t "
            "AND ticket_id = ANY(CAST(:ids AS uuid[])) ORDER BY ticket_id, created_at DESC"
        ),
        {"t": tenant, "ids": [str(i) for i in ticket_ids]},
    )
    now = datetime.now(UTC)
    out: dict[Any, dict[str, Any]] = {}
    for row in rows.mappings():
        if row["answered_at"] is not None:
            status = "answered"
        elif row["expires_at"] <= now:
            status = "expired"
        else:
            status = "requested"
        url = None
        if status == "requested":
            url = survey_url(
                settings, "csat", make_token(settings.survey_secret, "csat", tenant, row["id"])
            )
        out[row["ticket_id"]] = {
            "status": status,
            "survey_url": url,
            "score": row["score"],
            "comment": row["comment"],
        }
    return out


async def _claim(session: AsyncSession, table: str, token: str, now: datetime) -> Row:
    row = (
        (
            await session.execute(
                text(f"SELECT * FROM {table} WHERE token_hash = :h FOR UPDATE"),
                {"h": token_hash(token)},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise SurveyNotFound("no survey for this link")
    if row["answered_at"] is not None:
        raise SurveyAnswered("this survey was already answered")
    if row["expires_at"] <= now:
        raise SurveyExpired("this survey link has expired")
    return dict(row)


async def answer_csat(session: AsyncSession, token: str, score: int, comment: str | None) -> None:
    now = datetime.now(UTC)
    row = await _claim(session, "csat_surveys", token, now)
    await session.execute(
        text(
            "UPDATE csat_surveys SET score = :score, comment = :comment, answered_at = :now, "
            "version = version + 1 WHERE tenant_id = :t AND id = :id"
        ),
        {"score": score, "comment": comment, "now": now, "t": row["tenant_id"], "id": row["id"]},
    )
    events.emit(
        session,
        pb.CsatAnswered(
            ticket_id=str(row["ticket_id"]),
            contact_id=events.s(row["contact_id"]),
            score=score,
            comment=comment or "",
            assignee_id=events.s(row["assignee_id"]),
            group_id=events.s(row["group_id"]),
            answered_at=events.ts(now),
        ),
        tenant=row["tenant_id"],
        aggregate_id=row["id"],
        version=row["version"] + 1,
        actor=f"contact:{row['contact_id'] or ''}",
        origin="public:csat",
        occurred_at=now,
    )


# --- NPS -------------------------------------------------------------------------------------


async def create_nps(
    session: AsyncSession,
    settings: TicketsSettings,
    caller: Caller,
    name: str,
    contact_ids: Sequence[uuid.UUID],
) -> dict[str, Any]:
    if not caller.principal.has("admin", "marketer"):
        raise Forbidden("requires the admin or marketer role")
    now = datetime.now(UTC)
    sid = uuid.uuid4()
    contacts = list(dict.fromkeys(contact_ids))
    await session.execute(
        text(
            "INSERT INTO nps_surveys (tenant_id, id, name, created_by, created_at, version) "
            "VALUES (:t, :id, :name, :by, :now, 1)"
        ),
        {"t": caller.tenant, "id": sid, "name": name, "by": caller.sub, "now": now},
    )
    events.emit(
        session,
        pb.NpsSurveyCreated(name=name, invitations=len(contacts)),
        tenant=caller.tenant,
        aggregate_id=sid,
        version=1,
        actor=caller.sub,
        origin=caller.origin,
        occurred_at=now,
    )
    expires = now + timedelta(hours=settings.nps_token_ttl_hours)
    rows = []
    invitations = []
    for contact in contacts:
        iid = uuid.uuid4()
        token = make_token(settings.survey_secret, "nps", caller.tenant, iid)
        url = survey_url(settings, "nps", token)
        rows.append(
            {
                "t": caller.tenant,
                "id": iid,
                "survey": sid,
                "contact": contact,
                "hash": token_hash(token),
                "exp": expires,
                "now": now,
            }
        )
        invitations.append({"contact_id": contact, "survey_url": url})
        events.emit(
            session,
            pb.NpsInvited(
                survey_id=str(sid),
                contact_id=str(contact),
                survey_url=url,
                expires_at=events.ts(expires),
            ),
            tenant=caller.tenant,
            aggregate_id=iid,
            version=1,
            actor=caller.sub,
            origin=caller.origin,
            occurred_at=now,
        )
    await session.execute(
        text(
            "INSERT INTO nps_invitations (tenant_id, id, survey_id, contact_id, token_hash, "
            "expires_at, created_at, version) VALUES (:t, :id, :survey, :contact, :hash, :exp, "
            ":now, 1)"
        ),
        rows,
    )
    return {"id": sid, "name": name, "created_at": now, "invitations": invitations}


async def answer_nps(session: AsyncSession, token: str, score: int, comment: str | None) -> None:
    now = datetime.now(UTC)
    row = await _claim(session, "nps_invitations", token, now)
    await session.execute(
        text(
            "UPDATE nps_invitations SET score = :score, comment = :comment, answered_at = :now, "
            "version = version + 1 WHERE tenant_id = :t AND id = :id"
        ),
        {"score": score, "comment": comment, "now": now, "t": row["tenant_id"], "id": row["id"]},
    )
    events.emit(
        session,
        pb.NpsAnswered(
            survey_id=str(row["survey_id"]),
            contact_id=str(row["contact_id"]),
            score=score,
            category=nps_category(score),
            comment=comment or "",
            answered_at=events.ts(now),
        ),
        tenant=row["tenant_id"],
        aggregate_id=row["id"],
        version=row["version"] + 1,
        actor=f"contact:{row['contact_id']}",
        origin="public:nps",
        occurred_at=now,
    )
