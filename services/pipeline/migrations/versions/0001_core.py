"""Sales org, pipelines and stages, deals with stage history, orders, custom field replica.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

from chassis.migrations import create_chassis_tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
CREATE TABLE teams (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    parent_id uuid,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX teams_parent ON teams (tenant_id, parent_id);

CREATE TABLE team_members (
    tenant_id text NOT NULL,
    team_id uuid NOT NULL,
    user_id text NOT NULL,
    role text NOT NULL CHECK (role IN ('rep', 'manager')),
    PRIMARY KEY (tenant_id, team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (tenant_id, user_id);

CREATE TABLE pipelines (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE stages (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    pipeline_id uuid NOT NULL,
    name text NOT NULL,
    position integer NOT NULL,
    probability integer NOT NULL CHECK (probability BETWEEN 0 AND 100),
    forecast_category text NOT NULL,
    is_won boolean NOT NULL DEFAULT false,
    is_lost boolean NOT NULL DEFAULT false,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX stages_pipeline ON stages (tenant_id, pipeline_id, position);

CREATE TABLE deals (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    contact_id uuid,
    company_id uuid,
    owner_id text NOT NULL,
    pipeline_id uuid NOT NULL,
    stage_id uuid NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    expected_close_date date,
    -- The deal's own category; NULL means the stage's default applies.
    forecast_category text,
    line_items jsonb NOT NULL DEFAULT '[]',
    splits jsonb NOT NULL DEFAULT '[]',
    custom_fields jsonb NOT NULL DEFAULT '{}',
    external_ids jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'won', 'lost')),
    lost_reason text,
    closed_at timestamptz,
    created_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX deals_created ON deals (tenant_id, created_at, id);
CREATE INDEX deals_updated ON deals (tenant_id, updated_at, id);
CREATE INDEX deals_owner ON deals (tenant_id, owner_id);
CREATE INDEX deals_stage ON deals (tenant_id, pipeline_id, stage_id);
CREATE INDEX deals_open_close_date ON deals (tenant_id, expected_close_date)
    WHERE status = 'open' AND deleted_at IS NULL;
CREATE INDEX deals_closed_at ON deals (tenant_id, closed_at)
    WHERE status <> 'open' AND deleted_at IS NULL;
CREATE INDEX deals_contact ON deals (tenant_id, contact_id);
CREATE INDEX deals_company ON deals (tenant_id, company_id);

CREATE TABLE deal_external_ids (
    tenant_id text NOT NULL,
    system text NOT NULL,
    external_id text NOT NULL,
    deal_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, system, external_id)
);
CREATE INDEX deal_external_ids_deal ON deal_external_ids (tenant_id, deal_id);

-- One row per stay of a deal in a stage: written when the deal enters the stage (creation,
-- move, won, lost, reopen), completed (left_at, to_stage_id) when it leaves. The funnel,
-- the days in stage and the historical win rates are computed from these rows.
CREATE TABLE deal_stage_history (
    tenant_id text NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    deal_id uuid NOT NULL,
    pipeline_id uuid NOT NULL,
    stage_id uuid NOT NULL,
    -- Stage the deal came from; NULL for the stay that began with the deal's creation.
    from_stage_id uuid,
    entered_at timestamptz NOT NULL,
    entered_by text,
    -- Amount and currency of the deal when it entered the stage.
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    left_at timestamptz,
    to_stage_id uuid,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX deal_stage_history_deal ON deal_stage_history (tenant_id, deal_id, entered_at);
CREATE INDEX deal_stage_history_pipeline ON deal_stage_history (tenant_id, pipeline_id, entered_at);
CREATE INDEX deal_stage_history_stage ON deal_stage_history (tenant_id, stage_id, entered_at);

CREATE TABLE orders (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    contact_id uuid,
    company_id uuid,
    deal_id uuid,
    number text,
    ordered_at timestamptz NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'paid', 'refunded', 'cancelled')),
    paid_at timestamptz,
    refunded_at timestamptz,
    lines jsonb NOT NULL DEFAULT '[]',
    external_ids jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX orders_created ON orders (tenant_id, created_at, id);
CREATE INDEX orders_contact ON orders (tenant_id, contact_id);
CREATE INDEX orders_company ON orders (tenant_id, company_id);
CREATE INDEX orders_deal ON orders (tenant_id, deal_id);

CREATE TABLE order_external_ids (
    tenant_id text NOT NULL,
    system text NOT NULL,
    external_id text NOT NULL,
    order_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, system, external_id)
);
CREATE INDEX order_external_ids_order ON order_external_ids (tenant_id, order_id);

-- Replica of the contacts service's custom field definitions for deals (from
-- crm.contacts.custom_field.defined.v1), so deal custom fields validate locally.
CREATE TABLE custom_field_definitions (
    tenant_id text NOT NULL,
    object_type text NOT NULL,
    key text NOT NULL,
    label text NOT NULL,
    type text NOT NULL,
    required boolean NOT NULL DEFAULT false,
    options text[] NOT NULL DEFAULT '{}',
    version integer NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, object_type, key)
);
"""

TABLES = (
    "custom_field_definitions",
    "order_external_ids",
    "orders",
    "deal_stage_history",
    "deal_external_ids",
    "deals",
    "stages",
    "pipelines",
    "team_members",
    "teams",
)


def upgrade() -> None:
    create_chassis_tables(op.get_bind())
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
