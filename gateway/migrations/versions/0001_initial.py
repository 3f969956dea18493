"""The chassis tables and the 360 read model: customer_360, rm_companies, timeline.

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


def upgrade() -> None:
    create_chassis_tables(op.get_bind())
    # One precomputed document per customer. `doc` is NULL for a contact that was deleted,
    # erased or merged away (`state` says which): the row stays as a tombstone so a late
    # event cannot bring the document back, and holds nothing personal.
    op.execute("""
        CREATE TABLE customer_360 (
            tenant_id text NOT NULL,
            contact_id uuid NOT NULL,
            company_id uuid,
            owner_id text,
            state text NOT NULL DEFAULT 'active',
            doc jsonb,
            contact_version bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, contact_id)
        )""")
    op.execute(
        "CREATE INDEX customer_360_company ON customer_360 (tenant_id, company_id) "
        "WHERE company_id IS NOT NULL"
    )
    op.execute("""
        CREATE TABLE rm_companies (
            tenant_id text NOT NULL,
            company_id uuid NOT NULL,
            doc jsonb NOT NULL,
            version bigint NOT NULL,
            PRIMARY KEY (tenant_id, company_id)
        )""")
    # A company event shows on the timeline of each of its contacts, so an event id is unique
    # per contact.
    op.execute("""
        CREATE TABLE timeline (
            id bigserial PRIMARY KEY,
            tenant_id text NOT NULL,
            contact_id uuid NOT NULL,
            occurred_at timestamptz NOT NULL,
            kind text NOT NULL,
            summary text NOT NULL,
            data jsonb NOT NULL DEFAULT '{}'::jsonb,
            event_id uuid NOT NULL,
            CONSTRAINT timeline_event_contact UNIQUE (event_id, contact_id)
        )""")
    op.execute(
        "CREATE INDEX timeline_newest_first ON timeline "
        "(tenant_id, contact_id, occurred_at DESC, id DESC)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE timeline")
    op.execute("DROP TABLE rm_companies")
    op.execute("DROP TABLE customer_360")
