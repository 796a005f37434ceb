"""Tensors: pixel_sum, the integer sum of every element.

The partitioned search sorts images by it (rotation cannot change it, and
``(S_a - S_b)**2 / d**2`` is a lower bound of their MSE), so it reads only these small
summaries for the whole catalog and the tensors band by band. Existing rows are filled
here from their tensors, once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from difpy_index.store.migrate import backfill_tensors

    with op.batch_alter_table("tensors") as batch:
        batch.add_column(sa.Column("pixel_sum", sa.BigInteger(), nullable=True))
    backfill_tensors(op.get_bind(), {"pixel_sum": sa.BigInteger()},
                     lambda rows: [{"pixel_sum": sum(d)} for _, _, d in rows])


def downgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.drop_column("pixel_sum")
