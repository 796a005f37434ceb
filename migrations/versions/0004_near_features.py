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


def upgrade() -> None:
    from difpy_index.store.migrate import refill_near

    with op.batch_alter_table("tensors") as batch:
        batch.add_column(sa.Column("near", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("near_version", sa.String(length=16), nullable=True))
    refill_near(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("tensors") as batch:
        batch.drop_column("near_version")
        batch.drop_column("near")
