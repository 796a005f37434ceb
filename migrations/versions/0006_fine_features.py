"""Tensors: the ``near`` features gain the fine rule's (near.fine_features), version near-3.

The fine rule compares whole, untrimmed tensors; its per-image orientation invariants and
flags are stored after the ``lumas`` in the same blob, so a search reads them instead of
computing them from every tensor. Every existing row is filled again here from its stored
tensor: no file is decoded.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from difpy_index import near
    from difpy_index.store.migrate import backfill_tensors

    def fill(rows: list[tuple[int, int, bytes]]) -> list[dict[str, object]]:
        blobs = near.batch_blobs([{p: d} for _, p, d in rows])
        return [{"near": b[p], "near_version": near.NEAR_VERSION}
                for (_, p, _), b in zip(rows, blobs, strict=True)]

    backfill_tensors(op.get_bind(), {"near": sa.LargeBinary(), "near_version": sa.String()}, fill)


def downgrade() -> None:
    # the older layout is not rebuilt: its searches compute features of unknown versions
    op.execute("UPDATE tensors SET near = NULL, near_version = NULL")
