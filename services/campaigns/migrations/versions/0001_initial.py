"""Contacts replica, segments, templates, campaigns and deliveries, deal outcomes, loyalty,
lead scoring, touchpoints, sequences.

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
CREATE TABLE contacts (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    version bigint NOT NULL,
    first_name text,
    last_name text,
    email text,
    phone text,
    company_id text,
    owner_id text,
    lifecycle_stage text,
    lead_source text,
    tags text[] NOT NULL DEFAULT '{}',
    custom_fields jsonb NOT NULL DEFAULT '{}',
    email_marketing text NOT NULL DEFAULT 'unknown',
    legal_basis text,
    consent_updated_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    merged_into_id uuid,
    deleted_at timestamptz,
    erased_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX contacts_email ON contacts (tenant_id, email);
CREATE INDEX contacts_tags ON contacts USING gin (tags);

CREATE TABLE aggregate_versions (
    tenant_id text NOT NULL,
    aggregate text NOT NULL,
    id uuid NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (tenant_id, aggregate, id)
);

CREATE TABLE suppressions (
    tenant_id text NOT NULL,
    contact_id uuid NOT NULL,
    channel text NOT NULL,
    at timestamptz NOT NULL,
    -- For a hard bounce: the address that bounced (a new address lifts it).
    email text,
    PRIMARY KEY (tenant_id, contact_id, channel)
);

CREATE TABLE segments (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    type text NOT NULL CHECK (type IN ('dynamic', 'static')),
    filter jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE segment_members (
    tenant_id text NOT NULL,
    segment_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    added_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, segment_id, contact_id)
);

CREATE TABLE email_templates (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    subject text NOT NULL,
    html text NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE campaigns (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    segment_id uuid NOT NULL,
    template_id uuid NOT NULL,
    send_at timestamptz,
    status text NOT NULL,
    recipients integer NOT NULL DEFAULT 0,
    started_at timestamptz,
    finished_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX campaigns_due ON campaigns (send_at) WHERE status = 'scheduled';
CREATE INDEX campaigns_sending ON campaigns (tenant_id) WHERE status = 'sending';

CREATE TABLE deliveries (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    campaign_id uuid,
    enrollment_id uuid,
    step integer,
    sequence_id uuid,
    template_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    email text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    subject text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text,
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    first_opened_at timestamptz,
    first_clicked_at timestamptz,
    opens integer NOT NULL DEFAULT 0,
    clicks integer NOT NULL DEFAULT 0,
    unsubscribed_at timestamptz,
    version bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX deliveries_once_per_campaign ON deliveries (tenant_id, campaign_id, contact_id)
    WHERE campaign_id IS NOT NULL;
CREATE UNIQUE INDEX deliveries_once_per_step ON deliveries (tenant_id, enrollment_id, step)
    WHERE enrollment_id IS NOT NULL;
CREATE INDEX deliveries_pending ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_contact ON deliveries (tenant_id, contact_id);

CREATE TABLE deal_outcomes (
    tenant_id text NOT NULL,
    deal_id uuid NOT NULL,
    contact_id uuid,
    amount numeric NOT NULL,
    currency char(3) NOT NULL,
    won_at timestamptz,
    status text NOT NULL,
    PRIMARY KEY (tenant_id, deal_id)
);
CREATE INDEX deal_outcomes_contact ON deal_outcomes (tenant_id, contact_id);

CREATE TABLE loyalty_programs (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    currency char(3) NOT NULL,
    points_per_unit numeric NOT NULL,
    earn_on text NOT NULL CHECK (earn_on IN ('deal_won', 'order_paid')),
    tiers jsonb NOT NULL,
    points_expire_days integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE loyalty_members (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    program_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    balance bigint NOT NULL DEFAULT 0,
    tier text,
    -- When the stored tier was last computed: a daily sweep re-evaluates it as old points
    -- leave the rolling 365-day window.
    tier_checked_at timestamptz,
    version bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, program_id, contact_id)
);
CREATE INDEX loyalty_members_contact ON loyalty_members (tenant_id, contact_id);
CREATE INDEX loyalty_members_tier_check ON loyalty_members (tier_checked_at)
    WHERE tier IS NOT NULL;

CREATE TABLE loyalty_ledger (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    seq bigserial NOT NULL,
    member_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('earn', 'redeem', 'expire', 'reverse', 'adjust')),
    points bigint NOT NULL,
    reason text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX loyalty_ledger_member ON loyalty_ledger (tenant_id, member_id, seq);
CREATE INDEX loyalty_ledger_source ON loyalty_ledger (tenant_id, member_id, source)
    WHERE source <> '';

-- Earned points not yet consumed (redeemed, reversed or expired), oldest expiry first:
-- derived state of the ledger, so that expiry takes only what was not spent.
CREATE TABLE loyalty_lots (
    tenant_id text NOT NULL,
    entry_id uuid NOT NULL,
    seq bigint NOT NULL,
    member_id uuid NOT NULL,
    source text NOT NULL DEFAULT '',
    expires_at timestamptz,
    remaining bigint NOT NULL,
    PRIMARY KEY (tenant_id, entry_id)
);
CREATE INDEX loyalty_lots_member ON loyalty_lots (tenant_id, member_id) WHERE remaining > 0;
CREATE INDEX loyalty_lots_expiry ON loyalty_lots (expires_at) WHERE remaining > 0;

CREATE TABLE scoring_models (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    rules jsonb NOT NULL,
    half_life_days numeric NOT NULL DEFAULT 0,
    threshold numeric NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX scoring_models_name ON scoring_models (tenant_id, name)
    WHERE deleted_at IS NULL;

CREATE TABLE lead_scores (
    tenant_id text NOT NULL,
    model_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    score double precision NOT NULL,
    scored_at timestamptz NOT NULL,
    qualified_at timestamptz,
    PRIMARY KEY (tenant_id, model_id, contact_id)
);
CREATE INDEX lead_scores_contact ON lead_scores (tenant_id, contact_id);

CREATE TABLE score_rule_hits (
    tenant_id text NOT NULL,
    model_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    rule_index integer NOT NULL,
    times integer NOT NULL,
    PRIMARY KEY (tenant_id, model_id, contact_id, rule_index)
);

CREATE TABLE touchpoints (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    channel text NOT NULL,
    email text,
    contact_id uuid,
    occurred_at timestamptz NOT NULL,
    source text NOT NULL DEFAULT '',
    data jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX touchpoints_contact ON touchpoints (tenant_id, contact_id, occurred_at);
CREATE INDEX touchpoints_unlinked ON touchpoints (tenant_id, email) WHERE contact_id IS NULL;

CREATE TABLE lead_captures (
    tenant_id text NOT NULL,
    email text NOT NULL,
    touchpoint_id uuid NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, email)
);

CREATE TABLE sequences (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    steps jsonb NOT NULL,
    trigger jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE enrollments (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    sequence_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    step integer NOT NULL DEFAULT 0,
    status text NOT NULL CHECK (status IN ('active', 'completed', 'exited')),
    exit_reason text,
    next_run_at timestamptz,
    last_delivery_id uuid,
    enrolled_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX enrollments_once_at_a_time ON enrollments (tenant_id, sequence_id, contact_id)
    WHERE status = 'active';
CREATE INDEX enrollments_due ON enrollments (next_run_at) WHERE status = 'active';
CREATE INDEX enrollments_contact ON enrollments (tenant_id, contact_id) WHERE status = 'active';
"""

TABLES = (
    "enrollments",
    "sequences",
    "lead_captures",
    "touchpoints",
    "score_rule_hits",
    "lead_scores",
    "scoring_models",
    "loyalty_lots",
    "loyalty_ledger",
    "loyalty_members",
    "loyalty_programs",
    "deal_outcomes",
    "deliveries",
    "campaigns",
    "email_templates",
    "segment_members",
    "segments",
    "suppressions",
    "aggregate_versions",
    "contacts",
)


def upgrade() -> None:
    create_chassis_tables(op.get_bind())
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
