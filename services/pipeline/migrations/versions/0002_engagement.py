"""Activities, tasks with their scheduler, playbooks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
-- Logged interactions. Deleting an activity removes the row (its body is personal data).
CREATE TABLE activities (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    type text NOT NULL CHECK (type IN ('call', 'meeting', 'visit', 'email', 'note')),
    subject text,
    body text,
    contact_id uuid,
    deal_id uuid,
    owner_id text NOT NULL,
    occurred_at timestamptz NOT NULL,
    -- NULL when not recorded (so averages only count recorded durations).
    duration_seconds integer CHECK (duration_seconds >= 0),
    outcome text,
    created_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX activities_occurred ON activities (tenant_id, occurred_at DESC, id DESC);
CREATE INDEX activities_owner ON activities (tenant_id, owner_id, occurred_at DESC, id DESC);
CREATE INDEX activities_contact ON activities (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX activities_deal ON activities (tenant_id, deal_id) WHERE deal_id IS NOT NULL;

-- To-dos with two durable timers: a reminder at remind_at and "overdue" at due_at. A timer
-- is pending while the task is open and *_fired_for differs from its fire time; firing
-- stores the fire time it fired for, so changing remind_at or due_at re-arms it.
CREATE TABLE tasks (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    title text NOT NULL,
    due_at timestamptz,
    remind_at timestamptz,
    assignee_id text NOT NULL,
    contact_id uuid,
    deal_id uuid,
    status text NOT NULL CHECK (status IN ('open', 'done', 'cancelled')),
    priority text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    completed_at timestamptz,
    reminder_fired_for timestamptz,
    overdue_fired_for timestamptz,
    created_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id),
    CHECK (remind_at IS NULL OR due_at IS NULL OR remind_at <= due_at)
);
CREATE INDEX tasks_due ON tasks (tenant_id, (coalesce(due_at, 'infinity'::timestamptz)), id);
CREATE INDEX tasks_assignee ON tasks (tenant_id, assignee_id, status);
CREATE INDEX tasks_contact ON tasks (tenant_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX tasks_deal ON tasks (tenant_id, deal_id) WHERE deal_id IS NOT NULL;
-- The scheduler's work queues (all tenants): pending reminders and pending overdue timers.
CREATE INDEX tasks_reminder_pending ON tasks (remind_at)
    WHERE status = 'open' AND remind_at IS NOT NULL
      AND reminder_fired_for IS DISTINCT FROM remind_at;
CREATE INDEX tasks_overdue_pending ON tasks (due_at)
    WHERE status = 'open' AND due_at IS NOT NULL
      AND overdue_fired_for IS DISTINCT FROM due_at;

-- Enablement content, shown for the stages it lists.
CREATE TABLE playbooks (
    tenant_id text NOT NULL,
    id uuid NOT NULL,
    title text NOT NULL,
    body text NOT NULL DEFAULT '',
    stage_ids uuid[] NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    attachments text[] NOT NULL DEFAULT '{}',
    created_by text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX playbooks_created ON playbooks (tenant_id, created_at, id);
CREATE INDEX playbooks_stages ON playbooks USING gin (stage_ids);
"""

TABLES: tuple[str, ...] = ("playbooks", "tasks", "activities")


def upgrade() -> None:
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE IF EXISTS {table}")
