"""Customer analytics: list columns on customer_360, per-tenant RFM breakpoints and health
settings.

The list columns are plain columns written with the document by the code that changes what
they reflect (the contact upsert, the company embedding, the metrics refresh, tombstones):
generated columns over `doc` were measured 2-3x slower on every document write (each is
recomputed, detoasting the document, on every UPDATE). `events_version` is the version of
the `customer` aggregate of the events the gateway publishes (health_changed,
churn_risk_raised).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = (
    "btrim(COALESCE(doc #>> '{contact,first_name}', '') || ' ' "
    "|| COALESCE(doc #>> '{contact,last_name}', ''))"
)
_COLUMNS = {
    "sort_name": "text",
    # lower(name email company name): the `q` filter, trigram-indexed
    "search_text": "text",
    "rfm_segment": "text",
    "health_score": "integer",
    "health_band": "text",
    # No score yet counts as no risk: the column sorts without NULLs.
    "churn_risk": "numeric NOT NULL DEFAULT 0",
    "events_version": "bigint NOT NULL DEFAULT 0",
}
_BACKFILL = f"""
UPDATE customer_360 SET
    sort_name = lower({_NAME}),
    search_text = lower({_NAME} || ' ' || COALESCE(doc #>> '{{contact,email}}', '') || ' '
                        || COALESCE(doc #>> '{{company,name}}', '')),
    rfm_segment = doc #>> '{{metrics,rfm,segment}}',
    health_score = CAST(doc #>> '{{metrics,health,score}}' AS integer),
    health_band = doc #>> '{{metrics,health,band}}',
    churn_risk = COALESCE(CAST(doc #>> '{{metrics,churn_risk,score}}' AS numeric), 0)
WHERE doc IS NOT NULL
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, definition in _COLUMNS.items():
        op.execute(f"ALTER TABLE customer_360 ADD COLUMN {name} {definition}")
    op.execute(_BACKFILL)
    live = "WHERE doc IS NOT NULL"
    # Few indexes on purpose: every document write pays for them. `updated_at` changes with
    # every write, so it is not indexed (an index on it would rule out HOT updates for all
    # writes); sort=updated_at is a top-N sort over the tenant's rows instead. Segment and
    # owner filters ride on the churn index.
    for name, cols in {
        "churn": "tenant_id, churn_risk DESC, contact_id DESC",
        "health": "tenant_id, health_score, contact_id",
        "name": "tenant_id, sort_name, contact_id",
    }.items():
        op.execute(f"CREATE INDEX customer_360_list_{name} ON customer_360 ({cols}) {live}")
    op.execute(
        "CREATE INDEX customer_360_search ON customer_360 USING gin "
        f"(search_text gin_trgm_ops) {live}"
    )
    # Per tenant: the quintile breakpoints of the last full pass, the primary currency, and
    # where the running pass is (customers are rescored in batches, in contact id order).
    op.execute("""
        CREATE TABLE rfm_breakpoints (
            tenant_id text PRIMARY KEY,
            recency double precision[],
            frequency double precision[],
            monetary double precision[],
            currency text,
            population integer NOT NULL DEFAULT 0,
            computed_at timestamptz,
            next_pass_at timestamptz NOT NULL DEFAULT now(),
            pass_cursor uuid
        )""")
    op.execute("""
        CREATE TABLE health_settings (
            tenant_id text PRIMARY KEY,
            weights jsonb NOT NULL,
            churn_threshold numeric NOT NULL,
            version bigint NOT NULL DEFAULT 1,
            updated_by text NOT NULL DEFAULT '',
            updated_at timestamptz NOT NULL DEFAULT now()
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE health_settings")
    op.execute("DROP TABLE rfm_breakpoints")
    for name in _COLUMNS:
        op.execute(f"ALTER TABLE customer_360 DROP COLUMN {name}")
