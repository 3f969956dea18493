"""Contacts, companies, custom field definitions, external ids, import jobs.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from collections.abc import Sequence

from alembic import op

from chassis.migrations import create_chassis_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE companies (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    domain text,
    industry text,
    employees bigint,
    annual_revenue numeric(20, 2),
    annual_revenue_currency text,
    owner_id text,
    tags text[] NOT NULL DEFAULT '{}',
    custom_fields jsonb NOT NULL DEFAULT '{}',
    external_ids jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX companies_created ON companies (tenant_id, created_at, id);
CREATE INDEX companies_updated ON companies (tenant_id, updated_at, id);
CREATE INDEX companies_name_sort ON companies (tenant_id, lower(coalesce(name, '')), id);
CREATE INDEX companies_domain ON companies (tenant_id, domain);
CREATE INDEX companies_owner ON companies (tenant_id, owner_id);
CREATE INDEX companies_name_trgm ON companies USING gin (lower(name) gin_trgm_ops);
CREATE INDEX companies_tags ON companies USING gin (tags);

CREATE TABLE company_external_ids (
    tenant_id text NOT NULL,
    system text NOT NULL,
    external_id text NOT NULL,
    company_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, system, external_id)
);
CREATE INDEX company_external_ids_company ON company_external_ids (tenant_id, company_id);

CREATE TABLE contacts (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    first_name text,
    last_name text,
    email text,
    phone text,
    company_id uuid,
    owner_id text,
    lifecycle_stage text,
    lead_source text,
    tags text[] NOT NULL DEFAULT '{}',
    custom_fields jsonb NOT NULL DEFAULT '{}',
    external_ids jsonb NOT NULL DEFAULT '{}',
    consent jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    merged_into_id uuid,
    erased_at timestamptz,
    deleted_at timestamptz,
    search_text text GENERATED ALWAYS AS (
        lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '') || ' '
              || coalesce(email, ''))) STORED,
    name_norm text GENERATED ALWAYS AS (
        lower(btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')))) STORED,
    PRIMARY KEY (tenant_id, id)
);
-- Duplicates by email are legal in a CRM (dedup finds them): an index, not a constraint.
CREATE INDEX contacts_email ON contacts (tenant_id, email);
CREATE INDEX contacts_phone ON contacts (tenant_id, phone);
CREATE INDEX contacts_created ON contacts (tenant_id, created_at, id);
CREATE INDEX contacts_updated ON contacts (tenant_id, updated_at, id);
CREATE INDEX contacts_last_name_sort ON contacts (tenant_id, lower(coalesce(last_name, '')), id);
CREATE INDEX contacts_first_name_sort ON contacts (tenant_id, lower(coalesce(first_name, '')), id);
CREATE INDEX contacts_email_sort ON contacts (tenant_id, lower(coalesce(email, '')), id);
CREATE INDEX contacts_company ON contacts (tenant_id, company_id);
CREATE INDEX contacts_owner ON contacts (tenant_id, owner_id);
CREATE INDEX contacts_merged_into ON contacts (tenant_id, merged_into_id)
    WHERE merged_into_id IS NOT NULL;
CREATE INDEX contacts_search_trgm ON contacts USING gin (search_text gin_trgm_ops);
CREATE INDEX contacts_name_trgm ON contacts USING gin (name_norm gin_trgm_ops);
CREATE INDEX contacts_tags ON contacts USING gin (tags);
CREATE INDEX contacts_custom_fields ON contacts USING gin (custom_fields jsonb_path_ops);

CREATE TABLE contact_external_ids (
    tenant_id text NOT NULL,
    system text NOT NULL,
    external_id text NOT NULL,
    contact_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, system, external_id)
);
CREATE INDEX contact_external_ids_contact ON contact_external_ids (tenant_id, contact_id);

CREATE TABLE custom_field_definitions (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    object_type text NOT NULL,
    key text NOT NULL,
    label text NOT NULL,
    type text NOT NULL,
    required boolean NOT NULL DEFAULT false,
    options text[] NOT NULL DEFAULT '{}',
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, object_type, key)
);

CREATE TABLE import_jobs (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    status text NOT NULL,
    filename text NOT NULL,
    file_format text NOT NULL,
    content bytea NOT NULL,
    mapping jsonb NOT NULL DEFAULT '{}',
    total integer,
    processed integer NOT NULL DEFAULT 0,
    created integer NOT NULL DEFAULT 0,
    updated integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    error text,
    actor jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX import_jobs_unfinished ON import_jobs (status)
    WHERE status IN ('queued', 'running');

CREATE TABLE import_errors (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    job_id uuid NOT NULL,
    row integer NOT NULL,
    field text,
    message text NOT NULL
);
CREATE INDEX import_errors_job ON import_errors (tenant_id, job_id, row);
"""


def upgrade() -> None:
    create_chassis_tables(op.get_bind())
    # asyncpg prepares each statement: one command per execute
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in (
        "import_errors",
        "import_jobs",
        "custom_field_definitions",
        "contact_external_ids",
        "contacts",
        "company_external_ids",
        "companies",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
