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


def upgrade() -> None:
    from difpy_index.store.migrate import backfill_tensors
    from difpy_index.tensorhash import tensor_digests

    with op.batch_alter_table("tensors") as batch:
        batch.add_column(sa.Column("digest", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("turned_digest", sa.BigInteger(), nullable=True))

    def fill(rows: list[tuple[int, int, bytes]]) -> list[dict[str, int]]:
        return [dict(zip(("digest", "turned_digest"), tensor_digests(d, p), strict=True))
                for _, p, d in rows]

    backfill_tensors(op.get_bind(), {"digest": sa.BigInteger(), "turned_digest": sa.BigInteger()},
                     fill)


def downgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.drop_column("turned_digest")
        batch.drop_column("digest")
