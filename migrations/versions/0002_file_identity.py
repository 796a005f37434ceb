"""Files: ctime and orientation, format.

``ctime_ns`` joins size, mtime and inode in the change test (``touch -r`` can set mtime
back, never ctime); ``orientation`` is the EXIF orientation tag (1-8, NULL when absent) for
the keep rules and the review page; ``format`` is Pillow's name of the decoded format.
Existing rows get NULLs, and a NULL ``ctime_ns`` counts as "changed" once, so the next
update re-stats (and, where needed, re-decodes) them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("ctime_ns", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("orientation", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("format", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.drop_column("format")
        batch.drop_column("orientation")
        batch.drop_column("ctime_ns")
