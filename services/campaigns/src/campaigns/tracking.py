"""Public tracking endpoints (no JWT: the gateway routes /v1/public/* without auth; the
signed token is the credential): open pixel, click redirect, unsubscribe.

An unsubscribe suppresses marketing email to the contact here at once (`suppressions`),
cancels its pending emails, exits its sequences, and publishes `consent.withdrawn` for the
contacts service to set consent.email_marketing = denied on the contact. GET shows a
confirmation page (link scanners prefetch GETs); POST unsubscribes, which is also the RFC
8058 one-click target of the List-Unsubscribe header."""

from __future__ import annotations

import base64
import html
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import reactions
from campaigns.common import Actor, Row, emit, execute, next_version, now, one, ts
from campaigns.sending import email_message
from campaigns.settings import CampaignsSettings
from campaigns.tokens import Link, Tokens
from chassis.db import SessionDep
from crm.campaigns.v1 import campaigns_pb2 as pb

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0"}


async def get_tokens(request: Request) -> Tokens:
    settings: CampaignsSettings = request.app.state.settings
    return Tokens(settings.signing_secret, settings.public_base_url)


TokensDep = Annotated[Tokens, Depends(get_tokens)]


def public_actor(tenant: str) -> Actor:
    return Actor(tenant, "system:public-link", "crm/campaigns:tracking")


async def record_open(session: AsyncSession, link: Link) -> Row | None:
    at = now()
    row = await one(
        session,
        "UPDATE deliveries SET opens = opens + 1, first_opened_at = COALESCE(first_opened_at, "
        ":now), "
        "version = version + 1 WHERE tenant_id = :t AND id = :i AND status = 'sent' RETURNING *",
        {"now": at, "t": link.tenant, "i": link.delivery_id},
    )
    if row is None:
        return None
    first = row["opens"] == 1
    emit(
        session,
        public_actor(link.tenant),
        pb.EmailOpened(email=email_message(row), first=first),
        row["id"],
        row["version"],
    )
    if first:
        await reactions.email_engaged(session, link.tenant, row, "email.opened")
    return row


async def record_click(session: AsyncSession, link: Link) -> Row | None:
    at = now()
    row = await one(
        session,
        "UPDATE deliveries SET clicks = clicks + 1, first_clicked_at = COALESCE(first_clicked_at, "
        ":now), "
        "first_opened_at = COALESCE(first_opened_at, :now), version = version + 1 "
        "WHERE tenant_id = :t AND id = :i AND status = 'sent' RETURNING *",
        {"now": at, "t": link.tenant, "i": link.delivery_id},
    )
    if row is None:
        return None
    first = row["clicks"] == 1
    emit(
        session,
        public_actor(link.tenant),
        pb.EmailClicked(email=email_message(row), url=link.url, first=first),
        row["id"],
        row["version"],
    )
    if first:
        await reactions.email_engaged(session, link.tenant, row, "email.clicked")
    return row


async def unsubscribe(session: AsyncSession, link: Link) -> bool:
    """Idempotent: the first use records everything, later ones change nothing."""
    at = now()
    row = await one(
        session,
        "UPDATE deliveries SET unsubscribed_at = :now, version = version + 1 WHERE tenant_id = :t "
        "AND id = :i AND unsubscribed_at IS NULL RETURNING *",
        {"now": at, "t": link.tenant, "i": link.delivery_id},
    )
    if row is None:
        found = await one(
            session,
            "SELECT 1 AS x FROM deliveries WHERE tenant_id = :t AND id = :i",
            {"t": link.tenant, "i": link.delivery_id},
        )
        return found is not None
    actor = public_actor(link.tenant)
    emit(session, actor, pb.EmailUnsubscribed(email=email_message(row)), row["id"], row["version"])
    contact_id: uuid.UUID = row["contact_id"]
    await execute(
        session,
        "INSERT INTO suppressions (tenant_id, contact_id, channel, at) VALUES (:t, :c, "
        "'email_marketing', :now) "
        "ON CONFLICT (tenant_id, contact_id, channel) DO UPDATE SET at = EXCLUDED.at",
        {"t": link.tenant, "c": contact_id, "now": at},
    )
    version = await next_version(session, link.tenant, "consent", contact_id)
    emit(
        session,
        actor,
        pb.ConsentWithdrawn(
            contact_id=str(contact_id),
            channel="email_marketing",
            at=ts(at),
            email_id=str(row["id"]),
        ),
        contact_id,
        version,
    )
    await execute(
        session,
        "UPDATE deliveries SET status = 'skipped', last_error = 'unsubscribed' WHERE tenant_id = "
        ":t "
        "AND contact_id = :c AND status = 'pending'",
        {"t": link.tenant, "c": contact_id},
    )
    await reactions.unsubscribed(session, link.tenant, contact_id)
    return True


router = APIRouter(prefix="/v1/public", tags=["public"])


@router.get(
    "/t/o/{token}",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}, "description": "A 1x1 GIF"}},
)
async def open_pixel(token: str, session: SessionDep, tokens: TokensDep) -> Response:
    """Open tracking pixel (a 1x1 GIF); an unknown token still gets the GIF."""
    try:
        link = tokens.load(token.removesuffix(".gif"), "o")
    except Exception:
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE)
    await record_open(session, link)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/t/c/{token}")
async def click(token: str, session: SessionDep, tokens: TokensDep) -> RedirectResponse:
    """Click tracking: records the click and redirects to the link's target (302)."""
    link = tokens.load(token, "c")
    await record_click(session, link)
    return RedirectResponse(link.url, status_code=302, headers=NO_STORE)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>"""


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, tokens: TokensDep) -> HTMLResponse:
    """Confirmation page with a button that unsubscribes (POST to the same URL)."""
    tokens.load(token, "u")
    form = (
        f'<form method="post" action="{html.escape(token)}">'
        "<p>Stop receiving marketing email from us?</p>"
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_PAGE.format(title="Unsubscribe", body=form), headers=NO_STORE)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_now(token: str, session: SessionDep, tokens: TokensDep) -> HTMLResponse:
    """Unsubscribe from marketing email (also the RFC 8058 one-click target)."""
    link = tokens.load(token, "u")
    await unsubscribe(session, link)
    return HTMLResponse(
        _PAGE.format(
            title="You are unsubscribed",
            body="<p>You will not receive marketing email from us anymore.</p>",
        ),
        headers=NO_STORE,
    )
