"""Section items from other contexts (deals, orders, activities, tasks, tickets, ...) kept
apart from the documents, and a document revision for the ETag.

Items are stored per (section, item id) whatever the order in which the contact's and the
item's events arrive (they come from different streams): a document created later picks up
the items already known for its customer, and a section is always rebuilt from its items.

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


def upgrade() -> None:
    # Bumped by every change of the document: the 360 ETag (the contact version alone does
    # not change when a deal or a ticket does).
    op.execute("ALTER TABLE customer_360 ADD COLUMN revision bigint NOT NULL DEFAULT 1")
    op.execute("""
        CREATE TABLE rm_items (
            tenant_id text NOT NULL,
            section text NOT NULL,
            item_id text NOT NULL,
            contact_id uuid,
            item jsonb NOT NULL,
            version bigint NOT NULL,
            -- Newest first within a section.
            sort_at timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, section, item_id)
        )""")
    op.execute(
        "CREATE INDEX rm_items_contact ON rm_items (tenant_id, contact_id, section, sort_at DESC)"
        " WHERE contact_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE rm_items")
    op.execute("ALTER TABLE customer_360 DROP COLUMN revision")
