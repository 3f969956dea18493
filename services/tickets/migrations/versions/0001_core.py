"""Tickets, comments, groups, business hours, SLA policies and clocks, knowledge base,
CSAT and NPS surveys, custom field replica.

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
CREATE TABLE groups (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    strategy text NOT NULL CHECK (strategy IN ('round_robin', 'least_open')),
    agents text[] NOT NULL DEFAULT '{}',
    -- Round-robin position: the next ticket goes to agents[rr_next % len(agents)].
    rr_next bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE business_hours (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    timezone text NOT NULL,
    weekly jsonb NOT NULL,
    holidays date[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE sla_policies (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    position integer NOT NULL,
    business_hours_id uuid,
    conditions jsonb NOT NULL DEFAULT '{}',
    targets jsonb NOT NULL,
    warning_minutes integer,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX sla_policies_position ON sla_policies (tenant_id, position, created_at)
    WHERE deleted_at IS NULL;

CREATE TABLE tickets (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    subject text NOT NULL,
    description text NOT NULL DEFAULT '',
    requester_contact_id uuid,
    company_id uuid,
    channel text NOT NULL,
    priority text NOT NULL,
    type text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('new', 'open', 'pending', 'on_hold', 'solved', 'closed')),
    group_id uuid,
    assignee_id text,
    tags text[] NOT NULL DEFAULT '{}',
    custom_fields jsonb NOT NULL DEFAULT '{}',
    external_ids jsonb NOT NULL DEFAULT '{}',
    sla_policy_id uuid,
    created_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    solved_at timestamptz,
    closed_at timestamptz,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX tickets_created ON tickets (tenant_id, created_at, id);
CREATE INDEX tickets_requester ON tickets (tenant_id, requester_contact_id);
CREATE INDEX tickets_external_ids ON tickets USING gin (external_ids jsonb_path_ops);
CREATE INDEX tickets_open_assignee ON tickets (tenant_id, assignee_id)
    WHERE status IN ('new', 'open', 'pending', 'on_hold');

CREATE TABLE ticket_comments (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    ticket_id uuid NOT NULL,
    body text NOT NULL,
    public boolean NOT NULL,
    author_type text NOT NULL CHECK (author_type IN ('agent', 'requester')),
    author_id text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ticket_comments_ticket ON ticket_comments (tenant_id, ticket_id, created_at, id);

-- One row per SLA target of a ticket (next_response: one per requester message). The
-- scheduler claims rows whose next_fire_at is due (FOR UPDATE SKIP LOCKED), marks them and
-- writes sla.warning / sla.breached to the outbox in the same transaction.
CREATE TABLE sla_clocks (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    ticket_id uuid NOT NULL,
    metric text NOT NULL CHECK (metric IN ('first_response', 'next_response', 'resolution')),
    policy_id uuid NOT NULL,
    business_hours_id uuid,
    priority text NOT NULL,
    target_minutes integer NOT NULL,
    warning_minutes integer NOT NULL,
    started_at timestamptz NOT NULL,
    -- Running since (NULL while paused or stopped); business time before it is `consumed`.
    running_since timestamptz,
    consumed interval NOT NULL DEFAULT '0',
    due_at timestamptz,
    warn_at timestamptz,
    fulfilled_at timestamptz,
    warned_at timestamptz,
    breached_at timestamptz,
    -- The clock no longer counts (ticket closed without the target being met, or replaced).
    stopped_at timestamptz,
    -- Business and calendar time from start to fulfilment (for reports).
    business_elapsed interval,
    next_fire_at timestamptz,
    version integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX sla_clocks_ticket ON sla_clocks (tenant_id, ticket_id, metric, started_at);
CREATE INDEX sla_clocks_due ON sla_clocks (next_fire_at) WHERE next_fire_at IS NOT NULL;

CREATE TABLE kb_articles (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    tags text[] NOT NULL DEFAULT '{}',
    locale text NOT NULL,
    ts_config regconfig NOT NULL,
    status text NOT NULL CHECK (status IN ('draft', 'published')),
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector(ts_config, title), 'A')
        || setweight(to_tsvector(ts_config, body), 'B')
    ) STORED,
    created_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    deleted_at timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX kb_articles_tsv ON kb_articles USING gin (tsv)
    WHERE status = 'published' AND deleted_at IS NULL;
CREATE INDEX kb_articles_created ON kb_articles (tenant_id, created_at, id);

CREATE TABLE csat_surveys (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    ticket_id uuid NOT NULL,
    contact_id uuid,
    assignee_id text,
    group_id uuid,
    token_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    score integer CHECK (score BETWEEN 1 AND 5),
    comment text,
    answered_at timestamptz,
    created_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX csat_surveys_ticket ON csat_surveys (tenant_id, ticket_id, created_at);
CREATE INDEX csat_surveys_answered ON csat_surveys (tenant_id, answered_at)
    WHERE answered_at IS NOT NULL;

CREATE TABLE nps_surveys (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    name text NOT NULL,
    created_by text,
    created_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE nps_invitations (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    survey_id uuid NOT NULL,
    contact_id uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    score integer CHECK (score BETWEEN 0 AND 10),
    comment text,
    answered_at timestamptz,
    created_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX nps_invitations_survey ON nps_invitations (tenant_id, survey_id);
CREATE INDEX nps_invitations_contact ON nps_invitations (tenant_id, contact_id);

-- Replica of the contacts service's custom field definitions for tickets (from
-- crm.contacts.custom_field.defined.v1), so ticket custom fields validate locally.
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
)
"""

TABLES = (
    "custom_field_definitions",
    "nps_invitations",
    "nps_surveys",
    "csat_surveys",
    "kb_articles",
    "sla_clocks",
    "ticket_comments",
    "tickets",
    "sla_policies",
    "business_hours",
    "groups",
)


def upgrade() -> None:
    create_chassis_tables(op.get_bind())
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
