"""Plans and versions, assignments, the sales org replica, quotas, credits, statements,
closed periods, adjustments, disputes and the audit trail.

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
CREATE TABLE plans (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    period text NOT NULL CHECK (period IN ('month', 'quarter', 'year')),
    currency char(3) NOT NULL,
    latest_version integer NOT NULL,
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE plan_versions (
    tenant_id text NOT NULL,
    plan_id uuid NOT NULL,
    number integer NOT NULL,
    effective_from date NOT NULL,
    terms jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (tenant_id, plan_id, number),
    FOREIGN KEY (tenant_id, plan_id) REFERENCES plans (tenant_id, id)
);

CREATE TABLE plan_assignments (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    plan_id uuid NOT NULL,
    user_id text,
    team_id uuid,
    effective_from date NOT NULL,
    effective_to date,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, plan_id) REFERENCES plans (tenant_id, id),
    CHECK ((user_id IS NULL) <> (team_id IS NULL)),
    CHECK (effective_to IS NULL OR effective_to >= effective_from)
);
CREATE INDEX plan_assignments_plan ON plan_assignments (tenant_id, plan_id);

-- Replica of the pipeline service's sales org (TeamCreated/Updated/Deleted).
CREATE TABLE teams (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    parent_id uuid,
    version bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE team_members (
    tenant_id text NOT NULL,
    team_id uuid NOT NULL,
    user_id text NOT NULL,
    role text NOT NULL,
    PRIMARY KEY (tenant_id, team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (tenant_id, user_id);

CREATE TABLE quotas (
    tenant_id text NOT NULL,
    owner_kind text NOT NULL CHECK (owner_kind IN ('user', 'team')),
    owner_id text NOT NULL,
    period text NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    version integer NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (tenant_id, owner_kind, owner_id, period)
);
CREATE INDEX quotas_period ON quotas (tenant_id, period);

-- One row per (deal or order, credited user), upserted from pipeline events.
CREATE TABLE credits (
    tenant_id text NOT NULL,
    source_kind text NOT NULL CHECK (source_kind IN ('deal', 'order')),
    source_id text NOT NULL,
    user_id text NOT NULL,
    credit_date date NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    percent numeric NOT NULL,
    units jsonb NOT NULL DEFAULT '{}',
    clawed_back_at timestamptz,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, source_kind, source_id, user_id)
);
CREATE INDEX credits_user_date ON credits (tenant_id, user_id, credit_date);

CREATE TABLE statements (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    user_id text NOT NULL,
    period text NOT NULL,
    plan_id uuid NOT NULL,
    plan_version integer NOT NULL,
    currency char(3) NOT NULL,
    credit numeric NOT NULL,
    quota numeric,
    attainment numeric,
    payout numeric NOT NULL,
    deals_won integer NOT NULL,
    lines jsonb NOT NULL,
    content_hash text NOT NULL,
    status text NOT NULL CHECK (status IN ('draft', 'approved', 'paid')),
    locked boolean NOT NULL DEFAULT false,
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    approved_by text,
    approved_at timestamptz,
    paid_by text,
    paid_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, user_id, period)
);
CREATE INDEX statements_period ON statements (tenant_id, period, user_id);

CREATE TABLE closed_periods (
    tenant_id text NOT NULL,
    period text NOT NULL,
    statements integer NOT NULL,
    closed_at timestamptz NOT NULL,
    closed_by text NOT NULL,
    PRIMARY KEY (tenant_id, period)
);

CREATE TABLE adjustments (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    user_id text NOT NULL,
    period text NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    kind text NOT NULL CHECK (kind IN ('manual', 'clawback', 'correction', 'dispute')),
    reason text NOT NULL,
    origin_period text,
    dispute_id uuid,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX adjustments_target ON adjustments (tenant_id, user_id, period);
CREATE INDEX adjustments_origin ON adjustments (tenant_id, user_id, origin_period);

CREATE TABLE disputes (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    statement_id uuid NOT NULL,
    line_id text NOT NULL,
    user_id text NOT NULL,
    period text NOT NULL,
    reason text NOT NULL,
    expected_amount numeric,
    status text NOT NULL CHECK (status IN ('open', 'accepted', 'rejected')),
    resolution text NOT NULL DEFAULT '',
    adjustment_id uuid,
    version integer NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    resolved_at timestamptz,
    resolved_by text,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX disputes_user ON disputes (tenant_id, user_id, created_at);

CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    tenant_id text NOT NULL,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    object_type text NOT NULL,
    object_id text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_object ON audit_log (tenant_id, object_type, object_id, id);
"""


def upgrade() -> None:
    create_chassis_tables(op.get_bind())
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in (
        "audit_log", "disputes", "adjustments", "closed_periods", "statements", "credits",
        "quotas", "team_members", "teams", "plan_assignments", "plan_versions", "plans",
    ):  # fmt: skip
        op.execute(f"DROP TABLE IF EXISTS {table}")
