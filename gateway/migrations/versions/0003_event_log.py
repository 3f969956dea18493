"""The event log (the change feed and webhook replay read it) and partner webhooks.

`event_log` is the gateway's copy of every registered event of every stream. Its feed order
is `(txid, position)`: the writing transaction's id, then the row's sequence number. A reader
only serves rows whose transaction is older than every transaction still running
(`txid < pg_snapshot_xmin(pg_current_snapshot())`), so a row that commits late can never land
behind a cursor already handed out (a bare bigserial can: positions are taken at insert time
but become visible at commit time, in any order).

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


def upgrade() -> None:
    op.execute("""
        CREATE TABLE event_log (
            position bigserial PRIMARY KEY,
            txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            tenant_id text NOT NULL,
            event_id uuid NOT NULL,
            ce_type text NOT NULL,
            source text NOT NULL,
            aggregate text NOT NULL,
            aggregate_id text NOT NULL,
            version bigint NOT NULL,
            time timestamptz NOT NULL,
            logged_at timestamptz NOT NULL DEFAULT now(),
            data jsonb NOT NULL
        )""")
    op.execute("CREATE INDEX event_log_feed ON event_log (tenant_id, txid, position)")
    op.execute("CREATE INDEX event_log_logged ON event_log (logged_at)")
    op.execute("CREATE INDEX event_log_time ON event_log (tenant_id, time)")
    # The newest pruned row: a cursor at or before it has expired (410).
    op.execute("""
        CREATE TABLE event_log_horizon (
            id int PRIMARY KEY CHECK (id = 1),
            txid xid8 NOT NULL,
            position bigint NOT NULL,
            pruned_at timestamptz NOT NULL DEFAULT now()
        )""")

    op.execute("""
        CREATE TABLE webhook_subscriptions (
            id uuid PRIMARY KEY,
            tenant_id text NOT NULL,
            url text NOT NULL,
            event_types text[] NOT NULL,
            -- event_types as LIKE patterns, matched by the fan-out in SQL
            type_likes text[] NOT NULL,
            description text NOT NULL DEFAULT '',
            active boolean NOT NULL DEFAULT true,
            secret text NOT NULL,
            previous_secret text,
            previous_secret_expires_at timestamptz,
            version bigint NOT NULL DEFAULT 1,
            created_by text NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            disabled_at timestamptz,
            disabled_reason text
        )""")
    op.execute(
        "CREATE INDEX webhook_subscriptions_tenant ON webhook_subscriptions (tenant_id, id) "
        "WHERE active"
    )
    op.execute(
        "CREATE INDEX webhook_subscriptions_list "
        "ON webhook_subscriptions (tenant_id, created_at, id)"
    )
    op.execute("""
        CREATE TABLE webhook_deliveries (
            id bigserial PRIMARY KEY,
            subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
            tenant_id text NOT NULL,
            event_position bigint NOT NULL,
            event_id uuid NOT NULL,
            ce_type text NOT NULL,
            aggregate_key text NOT NULL,
            status text NOT NULL DEFAULT 'pending',
            attempts int NOT NULL DEFAULT 0,
            replay boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_attempt_at timestamptz,
            next_attempt_at timestamptz,
            delivered_at timestamptz,
            response_code int,
            latency_ms int,
            response_excerpt text,
            error text
        )""")
    op.execute(
        "CREATE INDEX webhook_deliveries_list ON webhook_deliveries (subscription_id, id DESC)"
    )
    op.execute(
        "CREATE INDEX webhook_deliveries_pending ON webhook_deliveries "
        "(subscription_id, aggregate_key, id) WHERE status = 'pending'"
    )
    # One row per (subscription, aggregate) with pending deliveries: the unit that is claimed
    # (so deliveries of one aggregate go out one after another, in order) and backed off.
    op.execute("""
        CREATE TABLE webhook_queues (
            subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
            aggregate_key text NOT NULL,
            next_attempt_at timestamptz NOT NULL,
            lease bigint NOT NULL DEFAULT 0,
            bumps bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (subscription_id, aggregate_key)
        )""")
    op.execute("CREATE INDEX webhook_queues_due ON webhook_queues (next_attempt_at)")


def downgrade() -> None:
    op.execute("DROP TABLE webhook_queues")
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhook_subscriptions")
    op.execute("DROP TABLE event_log_horizon")
    op.execute("DROP TABLE event_log")
