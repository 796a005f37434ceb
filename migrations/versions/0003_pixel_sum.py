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

_BATCH = 2000


def upgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.add_column(sa.Column("pixel_sum", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    tensors = sa.table(
        "tensors", sa.column("file_id", sa.Integer()), sa.column("px_size", sa.Integer()),
        sa.column("data", sa.LargeBinary()), sa.column("pixel_sum", sa.BigInteger()),
    )
    last = (-1, -1)
    while True:  # keyset pages: memory stays flat on a large catalog
        rows = conn.execute(
            sa.select(tensors.c.file_id, tensors.c.px_size, tensors.c.data)
            .where(sa.tuple_(tensors.c.file_id, tensors.c.px_size) > sa.tuple_(*last))
            .order_by(tensors.c.file_id, tensors.c.px_size)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            tensors.update()
            .where(tensors.c.file_id == sa.bindparam("fid"), tensors.c.px_size == sa.bindparam("px"))
            .values(pixel_sum=sa.bindparam("s")),
            [{"fid": f, "px": p, "s": sum(bytes(d))} for f, p, d in rows],
        )
        last = (rows[-1][0], rows[-1][1])


def downgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.drop_column("pixel_sum")
