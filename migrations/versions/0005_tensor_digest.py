"""Tensors: digest and turned_digest, exact content digests for ``duplicates``.

``digest`` is a signed 64-bit BLAKE2b digest of the tensor's bytes, ``turned_digest`` the
smallest of the digests of its four 90-degree rotations (``difpy_index.tensorhash``). A
``duplicates`` search groups rows by one of them in SQL (``turned_digest`` with rotate,
``digest`` without) and verifies only the rows that share one, so it needs no tensor of a
file without a twin. Existing rows are filled here from their stored tensors, once.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    from difpy_index.tensorhash import tensor_digests

    with op.batch_alter_table("tensors") as batch:
        batch.add_column(sa.Column("digest", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("turned_digest", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    tensors = sa.table(
        "tensors", sa.column("file_id", sa.Integer()), sa.column("px_size", sa.Integer()),
        sa.column("data", sa.LargeBinary()), sa.column("digest", sa.BigInteger()),
        sa.column("turned_digest", sa.BigInteger()),
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
        for f, p, d in rows:
            blob = bytes(d)
            ok = len(blob) == p * p * 3  # a damaged row keeps NULLs: searches read it whole
            plain, turned = tensor_digests(blob, p) if ok else (None, None)
            values.append({"fid": f, "px": p, "h": plain, "t": turned})
        conn.execute(
            tensors.update()
            .where(tensors.c.file_id == sa.bindparam("fid"), tensors.c.px_size == sa.bindparam("px"))
            .values(digest=sa.bindparam("h"), turned_digest=sa.bindparam("t")),
            values,
        )
        last = (rows[-1][0], rows[-1][1])


def downgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.drop_column("turned_digest")
        batch.drop_column("digest")
