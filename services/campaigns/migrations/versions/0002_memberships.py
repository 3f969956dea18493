"""Segment memberships per contact (published for the 360 view) and the refresh queue.

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
    op.execute("""
        CREATE TABLE contact_segment_memberships (
            tenant_id text NOT NULL,
            contact_id uuid NOT NULL,
            segment_ids uuid[] NOT NULL DEFAULT '{}',
            version integer NOT NULL,
            PRIMARY KEY (tenant_id, contact_id)
        )""")
    op.execute(
        "CREATE INDEX contact_segment_memberships_segments "
        "ON contact_segment_memberships USING gin (segment_ids)"
    )
    op.execute("""
        CREATE TABLE segment_refresh_queue (
            tenant_id text NOT NULL,
            segment_id uuid NOT NULL,
            requested_at timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, segment_id)
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE segment_refresh_queue")
    op.execute("DROP TABLE contact_segment_memberships")
