"""Email templates: subject, HTML and text bodies in sandboxed Jinja2, validated at save."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlmodel.ext.asyncio.session import AsyncSession

from campaigns import rendering, replica
from campaigns.common import Actor, ActorDep, ResourceNotFound, Row, SettingsDep, now
from campaigns.resources import Table
from chassis.db import SessionDep
from chassis.http import Page, check_if_match, set_etag
from chassis.problems import Unprocessable
from crm.campaigns.v1 import campaigns_pb2 as pb


def _event(change: str, row: Row) -> pb.EmailTemplateChanged:
    return pb.EmailTemplateChanged(
        change=change,
        template=pb.EmailTemplate(
            id=str(row["id"]),
            name=row["name"],
            subject=row["subject"],
            html=row["html"],
            text=row["text"],
            version=row["version"],
        ),
    )


TABLE = Table("email_templates", "email template", ("name", "subject", "html", "text"), _event)


class TemplateIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["Welcome"])
    subject: str = Field(min_length=1, max_length=500, examples=["Hello {{ contact.first_name }}"])
    html: str = Field(max_length=500_000, examples=["<p>Hi {{ contact.first_name }}</p>"])
    text: str = Field(max_length=200_000, examples=["Hi {{ contact.first_name }}"])


class TemplatePatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    subject: str | None = Field(default=None, min_length=1, max_length=500)
    html: str | None = Field(default=None, max_length=500_000)
    text: str | None = Field(default=None, max_length=200_000)


class TemplatePublic(BaseModel):
    id: uuid.UUID
    name: str
    subject: str
    html: str
    text: str
    created_at: datetime
    updated_at: datetime
    version: int


class PreviewIn(BaseModel):
    contact_id: uuid.UUID | None = None


class PreviewOut(BaseModel):
    subject: str
    html: str
    text: str


async def create(session: AsyncSession, actor: Actor, body: TemplateIn) -> Row:
    rendering.validate(body.model_dump())
    at = now()
    row = {
        **body.model_dump(),
        "tenant_id": actor.tenant,
        "id": uuid.uuid4(),
        "created_at": at,
        "updated_at": at,
        "version": 1,
    }
    return await TABLE.save(session, actor, row, "created")


async def update(
    session: AsyncSession, actor: Actor, tid: uuid.UUID, body: TemplatePatch, if_match: str | None
) -> Row:
    row = await TABLE.get(session, actor.tenant, tid, lock=True)
    check_if_match(if_match, row["version"])
    patch = body.model_dump(exclude_unset=True, exclude_none=True)
    changed = [k for k, v in patch.items() if row[k] != v]
    if not changed:
        return row
    row.update(patch)
    rendering.validate(row)
    row.update(updated_at=now(), version=row["version"] + 1)
    return await TABLE.save(session, actor, row, "updated", changed)


router = APIRouter(prefix="/v1/email-templates", tags=["email-templates"])
IfMatch = Annotated[str | None, Header()]


def out(row: Row, response: Response | None = None) -> TemplatePublic:
    if response is not None:
        set_etag(response, row["version"])
    return TemplatePublic.model_validate(row)


@router.post("", status_code=201, response_model=TemplatePublic)
async def create_template(
    body: TemplateIn, session: SessionDep, actor: ActorDep, response: Response
) -> TemplatePublic:
    """Create an email template; a template that does not render is a 422."""
    row = await create(session, actor, body)
    response.headers["Location"] = f"/v1/email-templates/{row['id']}"
    return out(row, response)


@router.get("", response_model=Page[TemplatePublic])
async def list_templates(
    session: SessionDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[TemplatePublic]:
    """List email templates."""
    found, nxt = await TABLE.page(session, actor.tenant, limit, cursor)
    return Page(items=[out(r) for r in found], next_cursor=nxt)


@router.get("/{template_id}", response_model=TemplatePublic)
async def get_template(
    template_id: uuid.UUID, session: SessionDep, actor: ActorDep, response: Response
) -> TemplatePublic:
    """Get an email template."""
    return out(await TABLE.get(session, actor.tenant, template_id), response)


@router.patch("/{template_id}", response_model=TemplatePublic)
async def patch_template(
    template_id: uuid.UUID,
    body: TemplatePatch,
    session: SessionDep,
    actor: ActorDep,
    response: Response,
    if_match: IfMatch = None,
) -> TemplatePublic:
    """Change an email template (If-Match required)."""
    return out(await update(session, actor, template_id, body, if_match), response)


@router.delete("/{template_id}", status_code=204)
async def delete_template(
    template_id: uuid.UUID, session: SessionDep, actor: ActorDep, if_match: IfMatch = None
) -> None:
    """Delete an email template (If-Match required)."""
    row = await TABLE.get(session, actor.tenant, template_id, lock=True)
    check_if_match(if_match, row["version"])
    at = now()
    row.update(updated_at=at, deleted_at=at, version=row["version"] + 1)
    await TABLE.save(session, actor, row, "deleted")


@router.post("/{template_id}/preview", response_model=PreviewOut)
async def preview_template(
    template_id: uuid.UUID,
    body: PreviewIn,
    session: SessionDep,
    actor: ActorDep,
    settings: SettingsDep,
) -> PreviewOut:
    """Render a template for a contact of the replica (or a sample contact)."""
    row = await TABLE.get(session, actor.tenant, template_id)
    contact: Row = rendering.SAMPLE_CONTACT
    if body.contact_id is not None:
        found = await replica.get_contact(session, actor.tenant, body.contact_id)
        if found is None or found["erased_at"] is not None:
            raise ResourceNotFound("contact", body.contact_id)
        contact = found
    unsubscribe = f"{settings.public_base_url}/v1/public/unsubscribe/preview"
    try:
        r = rendering.render(row, rendering.variables(contact, "Preview", unsubscribe))
    except Exception as e:
        raise Unprocessable(f"rendering failed: {e}") from e
    return PreviewOut(subject=r.subject, html=r.html, text=r.text)
