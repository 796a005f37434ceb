"""Tensors: the ``near`` blob gains what a search computed from it (near.search_features),
version near-4.

The correlation rule's orientation invariants, detail energy and eligibility, and the MSE
rule's block sums and sum of squares, used to be made from the stored luma and the tensors
at every ``near`` search; they are stored after ``lumas`` and ``fine_features`` in the same
blob, so a search only reads them. Every existing row is filled again here from its stored
tensor: no file is decoded.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from difpy_index.store.migrate import refill_near

    refill_near(op.get_bind())


def downgrade() -> None:
    # the older layout is not rebuilt: its searches compute features of unknown versions
    op.execute("UPDATE tensors SET near = NULL, near_version = NULL")
