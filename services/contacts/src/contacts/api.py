"""HTTP routers: thin wrappers that resolve the caller and call the services."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile

from chassis.auth import PrincipalDep
from chassis.db import SessionDep, get_database
from chassis.http import Page, set_etag
from chassis.problems import invalid
from contacts.access import Caller
from contacts.companies import CompanyService
from contacts.fields import FieldService
from contacts.imports import ImportService, runner
from contacts.models import (
    BatchIn,
    BatchItemResult,
    BatchOut,
    CompanyIn,
    CompanyPublic,
    ContactIn,
    ContactPublic,
    CustomFieldCreate,
    CustomFieldPublic,
    CustomFieldUpdate,
    DuplicateCandidate,
    DuplicatesOut,
    ImportJobPublic,
    LifecycleStage,
    MergeIn,
    MoneyIn,
    ObjectType,
)
from contacts.repository import ContactFilter
from contacts.service import ContactService
from contacts.settings import ContactsSettings

Row = dict[str, Any]


async def get_caller(
    principal: PrincipalDep, x_origin: Annotated[str | None, Header()] = None
) -> Caller:
    return Caller(principal, (x_origin or principal.client or "")[:200])


CallerDep = Annotated[Caller, Depends(get_caller)]
IfMatch = Annotated[str | None, Header()]


async def get_settings(request: Request) -> ContactsSettings:
    settings: ContactsSettings = request.app.state.settings
    return settings


async def contact_service(
    session: SessionDep,
    caller: CallerDep,
    settings: Annotated[ContactsSettings, Depends(get_settings)],
    request: Request,
) -> ContactService:
    reads = await get_database(request).pool()
    return ContactService(session, caller, settings.default_phone_region, reads)


async def company_service(
    session: SessionDep, caller: CallerDep, request: Request
) -> CompanyService:
    return CompanyService(session, caller, await get_database(request).pool())


async def field_service(session: SessionDep, caller: CallerDep) -> FieldService:
    return FieldService(session, caller)


async def import_service(session: SessionDep, caller: CallerDep) -> ImportService:
    return ImportService(session, caller)


Contacts = Annotated[ContactService, Depends(contact_service)]
Companies = Annotated[CompanyService, Depends(company_service)]
Fields = Annotated[FieldService, Depends(field_service)]
Imports = Annotated[ImportService, Depends(import_service)]


def contact_out(row: Row, response: Response | None = None) -> ContactPublic:
    if response is not None:
        set_etag(response, row["version"])
    return ContactPublic.model_validate(row)


def company_out(row: Row, response: Response | None = None) -> CompanyPublic:
    if response is not None:
        set_etag(response, row["version"])
    data = dict(row)
    amount = data.pop("annual_revenue", None)
    currency = data.pop("annual_revenue_currency", None)
    money = MoneyIn(amount=format(amount, "f"), currency=currency) if amount is not None else None
    return CompanyPublic.model_validate({**data, "annual_revenue": money})


def field_out(row: Row, response: Response | None = None) -> CustomFieldPublic:
    if response is not None:
        set_etag(response, row["version"])
    return CustomFieldPublic.model_validate(row)


# --- contacts -------------------------------------------------------------------------------

contacts_router = APIRouter(prefix="/v1/contacts", tags=["contacts"])


@contacts_router.post("", status_code=201, response_model=ContactPublic)
async def create_contact(body: ContactIn, svc: Contacts, response: Response) -> ContactPublic:
    """Create a contact."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/contacts/{row['id']}"
    return contact_out(row, response)


@contacts_router.get("", response_model=Page[ContactPublic])
async def list_contacts(
    svc: Contacts,
    request: Request,
    q: Annotated[str | None, Query(max_length=200)] = None,
    tag: str | None = None,
    owner_id: str | None = None,
    lifecycle_stage: LifecycleStage | None = None,
    company_id: uuid.UUID | None = None,
    updated_after: datetime | None = None,
    sort: str = "created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[ContactPublic]:
    """List contacts (filters: q, tag, owner_id, lifecycle_stage, company_id, cf.<key>...)."""
    cf = {k[3:]: v for k, v in request.query_params.items() if k.startswith("cf.")}
    f = ContactFilter(
        q=q,
        tag=tag,
        owner_id=owner_id,
        lifecycle_stage=lifecycle_stage,
        company_id=company_id,
        updated_after=updated_after,
    )
    rows, next_cursor = await svc.search(f, cf, sort, cursor, limit)
    return Page(items=[contact_out(r) for r in rows], next_cursor=next_cursor)


@contacts_router.post("/batch", response_model=BatchOut)
async def batch_upsert(body: BatchIn, svc: Contacts) -> BatchOut:
    """Upsert up to 1000 contacts by external id, else email; one result per item."""
    outcomes = await svc.batch(body.items)
    return BatchOut(
        items=[
            BatchItemResult(
                index=o.index,
                status=o.status,
                id=o.row["id"] if o.row else None,
                version=o.row["version"] if o.row else None,
                errors=[e.as_dict() for e in o.errors],
            )
            for o in outcomes
        ]
    )


@contacts_router.post("/imports", status_code=202, response_model=ImportJobPublic)
async def start_import(
    svc: Imports,
    request: Request,
    file: Annotated[UploadFile, File()],
    mapping: Annotated[str | None, Form()] = None,
) -> ImportJobPublic:
    """Start importing a CSV or XLSX file of contacts; poll the returned job."""
    parsed: Any = {}
    if mapping:
        try:
            parsed = json.loads(mapping)
        except ValueError:
            raise invalid("mapping", "must be a JSON object of column -> field") from None
        if not isinstance(parsed, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
        ):
            raise invalid("mapping", "must be a JSON object of column -> field")
    content = await file.read()
    job = await svc.create(file.filename or "upload", file.content_type, content, parsed)
    # the task waits for this request's commit before it reads the job
    runner(request.app).start(job["tenant_id"], job["id"])
    return ImportJobPublic.model_validate(job)


@contacts_router.get("/imports/{job_id}", response_model=ImportJobPublic)
async def get_import(job_id: uuid.UUID, svc: Imports) -> ImportJobPublic:
    """Status, counts and row errors of an import job."""
    return ImportJobPublic.model_validate(await svc.get(job_id))


@contacts_router.put(
    "/by-external-id/{system}/{external_id}",
    response_model=ContactPublic,
    responses={201: {"model": ContactPublic, "description": "Created"}},
)
async def upsert_contact(
    system: str,
    external_id: str,
    body: ContactIn,
    svc: Contacts,
    response: Response,
    if_match: IfMatch = None,
) -> ContactPublic:
    """Create or update the contact with this external id (201 created, 200 updated)."""
    _check_system(system)
    row, created = await svc.upsert_by_external_id(system, external_id, body, if_match)
    response.status_code = 201 if created else 200
    return contact_out(row, response)


@contacts_router.get("/{contact_id:uuid}", response_model=ContactPublic)
async def get_contact(contact_id: uuid.UUID, svc: Contacts, response: Response) -> ContactPublic:
    """Read a contact."""
    return contact_out(await svc.get(contact_id), response)


@contacts_router.patch("/{contact_id:uuid}", response_model=ContactPublic)
async def update_contact(
    contact_id: uuid.UUID,
    body: ContactIn,
    svc: Contacts,
    response: Response,
    if_match: IfMatch = None,
) -> ContactPublic:
    """Change the fields sent; needs If-Match."""
    return contact_out(await svc.update(contact_id, body, if_match), response)


@contacts_router.delete("/{contact_id:uuid}", status_code=204)
async def delete_contact(
    contact_id: uuid.UUID, svc: Contacts, if_match: IfMatch = None
) -> Response:
    """Delete a contact; needs If-Match."""
    await svc.delete(contact_id, if_match)
    return Response(status_code=204)


@contacts_router.get("/{contact_id}/duplicates", response_model=DuplicatesOut)
async def find_duplicates(
    contact_id: uuid.UUID,
    svc: Contacts,
    settings: Annotated[ContactsSettings, Depends(get_settings)],
    threshold: Annotated[float | None, Query(ge=0, le=1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> DuplicatesOut:
    """Likely duplicates of a contact, scored 0..1 with the reasons."""
    found = await svc.duplicates(
        contact_id, settings.duplicate_threshold if threshold is None else threshold, limit
    )
    return DuplicatesOut(
        items=[
            DuplicateCandidate(contact=contact_out(r), score=s, reasons=why) for r, s, why in found
        ]
    )


@contacts_router.post("/{contact_id}/merge", response_model=ContactPublic)
async def merge_contacts(
    contact_id: uuid.UUID,
    body: MergeIn,
    svc: Contacts,
    response: Response,
    if_match: IfMatch = None,
) -> ContactPublic:
    """Merge duplicates into this contact; they become tombstones."""
    return contact_out(await svc.merge(contact_id, body.duplicate_ids, if_match), response)


@contacts_router.post("/{contact_id}/erase", response_model=ContactPublic)
async def erase_contact(contact_id: uuid.UUID, svc: Contacts, response: Response) -> ContactPublic:
    """Erase a contact's personal data (GDPR); admin only."""
    return contact_out(await svc.erase(contact_id), response)


def _check_system(system: str) -> None:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.:-]{0,62}", system):
        raise invalid("system", "must be a lower-case slug such as sap")


# --- companies ------------------------------------------------------------------------------

companies_router = APIRouter(prefix="/v1/companies", tags=["companies"])


@companies_router.post("", status_code=201, response_model=CompanyPublic)
async def create_company(body: CompanyIn, svc: Companies, response: Response) -> CompanyPublic:
    """Create a company."""
    row = await svc.create(body)
    response.headers["Location"] = f"/v1/companies/{row['id']}"
    return company_out(row, response)


@companies_router.get("", response_model=Page[CompanyPublic])
async def list_companies(
    svc: Companies,
    q: Annotated[str | None, Query(max_length=200)] = None,
    tag: str | None = None,
    updated_after: datetime | None = None,
    sort: str = "created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Page[CompanyPublic]:
    """List companies; filter with q (name or domain), tag, updated_after."""
    rows, next_cursor = await svc.search(q, tag, updated_after, sort, cursor, limit)
    return Page(items=[company_out(r) for r in rows], next_cursor=next_cursor)


@companies_router.put(
    "/by-external-id/{system}/{external_id}",
    response_model=CompanyPublic,
    responses={201: {"model": CompanyPublic, "description": "Created"}},
)
async def upsert_company(
    system: str,
    external_id: str,
    body: CompanyIn,
    svc: Companies,
    response: Response,
    if_match: IfMatch = None,
) -> CompanyPublic:
    """Create or update the company with this external id (201 created, 200 updated)."""
    _check_system(system)
    row, created = await svc.upsert_by_external_id(system, external_id, body, if_match)
    response.status_code = 201 if created else 200
    return company_out(row, response)


@companies_router.get("/{company_id}", response_model=CompanyPublic)
async def get_company(company_id: uuid.UUID, svc: Companies, response: Response) -> CompanyPublic:
    """Read a company."""
    return company_out(await svc.get(company_id), response)


@companies_router.patch("/{company_id}", response_model=CompanyPublic)
async def update_company(
    company_id: uuid.UUID,
    body: CompanyIn,
    svc: Companies,
    response: Response,
    if_match: IfMatch = None,
) -> CompanyPublic:
    """Change the fields sent; needs If-Match."""
    return company_out(await svc.update(company_id, body, if_match), response)


@companies_router.delete("/{company_id}", status_code=204)
async def delete_company(
    company_id: uuid.UUID, svc: Companies, if_match: IfMatch = None
) -> Response:
    """Delete a company without contacts; needs If-Match."""
    await svc.delete(company_id, if_match)
    return Response(status_code=204)


# --- custom fields --------------------------------------------------------------------------

fields_router = APIRouter(prefix="/v1/custom-fields", tags=["custom fields"])


@fields_router.get("/{object_type}", response_model=Page[CustomFieldPublic])
async def list_fields(object_type: ObjectType, svc: Fields) -> Page[CustomFieldPublic]:
    """Custom fields defined for an object type."""
    return Page(items=[field_out(r) for r in await svc.definitions(object_type)])


@fields_router.post("/{object_type}", status_code=201, response_model=CustomFieldPublic)
async def define_field(
    object_type: ObjectType, body: CustomFieldCreate, svc: Fields, response: Response
) -> CustomFieldPublic:
    """Define a custom field; admin only."""
    return field_out(await svc.define(object_type, body), response)


@fields_router.get("/{object_type}/{key}", response_model=CustomFieldPublic)
async def get_field(
    object_type: ObjectType, key: str, svc: Fields, response: Response
) -> CustomFieldPublic:
    """Read a custom field definition."""
    return field_out(await svc.get(object_type, key), response)


@fields_router.patch("/{object_type}/{key}", response_model=CustomFieldPublic)
async def update_field(
    object_type: ObjectType,
    key: str,
    body: CustomFieldUpdate,
    svc: Fields,
    response: Response,
    if_match: IfMatch = None,
) -> CustomFieldPublic:
    """Change label, required or options; admin only, needs If-Match."""
    return field_out(await svc.update(object_type, key, body, if_match), response)


@fields_router.delete("/{object_type}/{key}", status_code=204)
async def delete_field(
    object_type: ObjectType, key: str, svc: Fields, if_match: IfMatch = None
) -> Response:
    """Delete a custom field definition; admin only, needs If-Match."""
    await svc.delete(object_type, key, if_match)
    return Response(status_code=204)


routers = [contacts_router, companies_router, fields_router]
