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

from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from difpy_index.store.migrate import refill_near

    refill_near(op.get_bind())


def downgrade() -> None:
    # the older layout is not rebuilt: its searches compute features of unknown versions
    op.execute("UPDATE tensors SET near = NULL, near_version = NULL")
