"""SQLModel tables. Every table carries `tenant_id` first in its primary key; queries live in
`contacts.repository` and always filter by it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

# Lower-cased text that `q` searches (pg_trgm GIN index), and the normalized full name that
# duplicate detection compares (also trigram-indexed).
# The contact's single-valued fields (everything but maps, lists, consent and bookkeeping):
# what a write sets directly, what an import column can name, what merge picks one value of.
CONTACT_SCALARS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "company_id",
    "owner_id",
    "lifecycle_stage",
    "lead_source",
)

CONTACT_SEARCH_SQL = (
    "lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' ' "
    "|| coalesce(email, ''))"
)
CONTACT_NAME_SQL = "lower(btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')))"


def _ts(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable))


def _jsonb(default: str = "{}") -> Any:
    return Field(
        default=None,
        sa_column=Column(JSONB, nullable=False, server_default=text(f"'{default}'::jsonb")),
    )


def _tags() -> Any:
    return Field(
        default=None,
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    )


class Contact(SQLModel, table=True):
    __tablename__ = "contacts"
    __table_args__ = (
        Index("contacts_created", "tenant_id", "created_at", "id"),
        Index("contacts_updated", "tenant_id", "updated_at", "id"),
        Index("contacts_email", "tenant_id", "email"),
        Index("contacts_phone", "tenant_id", "phone"),
        Index("contacts_company", "tenant_id", "company_id"),
        Index("contacts_owner", "tenant_id", "owner_id"),
        Index("contacts_merged_into", "tenant_id", "merged_into_id"),
    )

    tenant_id: str = Field(sa_column=Column(Text, primary_key=True))
    id: uuid.UUID = Field(primary_key=True)
    first_name: str | None = Field(default=None, sa_type=Text)
    last_name: str | None = Field(default=None, sa_type=Text)
    email: str | None = Field(default=None, sa_type=Text)
    phone: str | None = Field(default=None, sa_type=Text)
    company_id: uuid.UUID | None = None
    owner_id: str | None = Field(default=None, sa_type=Text)
    lifecycle_stage: str | None = Field(default=None, sa_type=Text)
    lead_source: str | None = Field(default=None, sa_type=Text)
    tags: list[str] = _tags()
    custom_fields: dict[str, Any] = _jsonb()
    external_ids: dict[str, str] = _jsonb()
    consent: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    version: int = Field(sa_column=Column(Integer, nullable=False))
    merged_into_id: uuid.UUID | None = None
    erased_at: datetime | None = _ts(nullable=True)
    deleted_at: datetime | None = _ts(nullable=True)
    search_text: str | None = Field(
        default=None, sa_column=Column(Text, Computed(CONTACT_SEARCH_SQL, persisted=True))
    )
    name_norm: str | None = Field(
        default=None, sa_column=Column(Text, Computed(CONTACT_NAME_SQL, persisted=True))
    )


class ContactExternalId(SQLModel, table=True):
    """(tenant, system, external id) -> contact: the uniqueness of external ids."""

    __tablename__ = "contact_external_ids"
    __table_args__ = (Index("contact_external_ids_contact", "tenant_id", "contact_id"),)

    tenant_id: str = Field(sa_column=Column(Text, primary_key=True))
    system: str = Field(sa_column=Column(Text, primary_key=True))
    external_id: str = Field(sa_column=Column(Text, primary_key=True))
    contact_id: uuid.UUID


class Company(SQLModel, table=True):
    __tablename__ = "companies"
    __table_args__ = (
        Index("companies_created", "tenant_id", "created_at", "id"),
        Index("companies_domain", "tenant_id", "domain"),
        Index("companies_owner", "tenant_id", "owner_id"),
    )

    tenant_id: str = Field(sa_column=Column(Text, primary_key=True))
    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(sa_type=Text)
    domain: str | None = Field(default=None, sa_type=Text)
    industry: str | None = Field(default=None, sa_type=Text)
    employees: int | None = Field(default=None, sa_type=BigInteger)
    annual_revenue: Decimal | None = Field(default=None, sa_column=Column(Numeric(20, 2)))
    annual_revenue_currency: str | None = Field(default=None, sa_type=Text)
    owner_id: str | None = Field(default=None, sa_type=Text)
    tags: list[str] = _tags()
    custom_fields: dict[str, Any] = _jsonb()
    external_ids: dict[str, str] = _jsonb()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    version: int = Field(sa_column=Column(Integer, nullable=False))
    deleted_at: datetime | None = _ts(nullable=True)


class CompanyExternalId(SQLModel, table=True):
    __tablename__ = "company_external_ids"
    __table_args__ = (Index("company_external_ids_company", "tenant_id", "company_id"),)

    tenant_id: str = Field(sa_column=Column(Text, primary_key=True))
    system: str = Field(sa_column=Column(Text, primary_key=True))
    external_id: str = Field(sa_column=Column(Text, primary_key=True))
    company_id: uuid.UUID


class CustomFieldDefinition(SQLModel, table=True):
    __tablename__ = "custom_field_definitions"
    __table_args__ = (UniqueConstraint("tenant_id", "object_type", "key"),)

    tenant_id: str = Field(sa_column=Column(Text, primary_key=True))
    id: uuid.UUID = Field(primary_key=True)
    object_type: str = Field(sa_type=Text)
    key: str = Field(sa_type=Text)
    label: str = Field(sa_type=Text)
    type: str = Field(sa_type=Text)
    required: bool = False
    options: list[str] = _tags()
    version: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ImportJob(SQLModel, table=True):
    """A bulk import; the uploaded file is kept so that a crashed job can be resumed."""

    __tablename__ = "import_jobs"
    __table_args__ = (Index("import_jobs_status", "status"),)

    tenant_id: str = Field(sa_column=Column(Text, primary_key=True))
    id: uuid.UUID = Field(primary_key=True)
    status: str = Field(sa_type=Text)
    filename: str = Field(sa_type=Text)
    file_format: str = Field(sa_type=Text)
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    mapping: dict[str, str] = _jsonb()
    total: int | None = None
    processed: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    actor: dict[str, Any] = _jsonb()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class ImportRowError(SQLModel, table=True):
    __tablename__ = "import_errors"
    __table_args__ = (Index("import_errors_job", "tenant_id", "job_id", "row"),)

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    tenant_id: str = Field(sa_type=Text)
    job_id: uuid.UUID
    row: int
    field: str | None = Field(default=None, sa_type=Text)
    message: str = Field(sa_type=Text)
