"""Tensors: the ``near`` preset's features (near.lumas) and their version.

A search with ``near`` reads them instead of resampling every tensor again; ``update``'s
workers compute them beside each new tensor. Existing rows are filled here from their
stored tensors, once: no file is decoded again.

Revision ID: 0004
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    import numpy as np

    from difpy_index import near

    with op.batch_alter_table("tensors") as batch:
        batch.add_column(sa.Column("near", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("near_version", sa.String(length=16), nullable=True))
    conn = op.get_bind()
    tensors = sa.table(
        "tensors", sa.column("file_id", sa.Integer()), sa.column("px_size", sa.Integer()),
        sa.column("data", sa.LargeBinary()), sa.column("near", sa.LargeBinary()),
        sa.column("near_version", sa.String()),
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
        values = []
        for px in sorted({int(p) for _, p, _ in rows}):
            part = [(f, bytes(d)) for f, p, d in rows if p == px]
            t = np.frombuffer(b"".join(d for _, d in part), dtype=np.uint8).reshape(
                len(part), px, px, 3)
            lum = near.lumas(t)
            values += [{"fid": f, "px": px, "blob": near.pack(lum[i])}
                       for i, (f, _) in enumerate(part)]
        conn.execute(
            tensors.update()
            .where(tensors.c.file_id == sa.bindparam("fid"), tensors.c.px_size == sa.bindparam("px"))
            .values(near=sa.bindparam("blob"), near_version=near.NEAR_VERSION),
            values,
        )
        last = (rows[-1][0], rows[-1][1])


def downgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.drop_column("near_version")
        batch.drop_column("near")
