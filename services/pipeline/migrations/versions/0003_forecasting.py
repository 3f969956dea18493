"""Forecast snapshots, manager adjustments, quota replica.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
-- Immutable forecast snapshots: the full forecast response as the taker saw it.
CREATE TABLE forecast_snapshots (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    period text NOT NULL,
    group_by text NOT NULL,
    team_id uuid,
    taken_by text NOT NULL,
    taken_at timestamptz NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX forecast_snapshots_period ON forecast_snapshots (tenant_id, period, taken_at, id);
CREATE INDEX forecast_snapshots_taken ON forecast_snapshots (tenant_id, taken_at, id);

CREATE FUNCTION forecast_snapshots_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'forecast snapshots are immutable'; END
$$;
CREATE TRIGGER forecast_snapshots_no_update BEFORE UPDATE ON forecast_snapshots
    FOR EACH ROW EXECUTE FUNCTION forecast_snapshots_immutable();

-- A manager's override of one category total of a subordinate (user) or team for a period.
CREATE TABLE forecast_adjustments (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    period text NOT NULL,
    subject_type text NOT NULL CHECK (subject_type IN ('user', 'team')),
    subject_id text NOT NULL,
    category text NOT NULL CHECK (category IN ('commit', 'best_case', 'pipeline')),
    currency char(3) NOT NULL,
    amount numeric NOT NULL,
    note text NOT NULL DEFAULT '',
    adjusted_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, period, subject_type, subject_id, category, currency)
);

-- Replica of the commissions service's quotas (crm.commissions.quota.set.v1).
CREATE TABLE forecast_quotas (
    tenant_id text NOT NULL,
    id text NOT NULL,
    user_id text,
    team_id text,
    period text NOT NULL,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX forecast_quotas_period ON forecast_quotas (tenant_id, period)
"""

TABLES: tuple[str, ...] = ("forecast_quotas", "forecast_adjustments", "forecast_snapshots")


def upgrade() -> None:
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP FUNCTION IF EXISTS forecast_snapshots_immutable()")
