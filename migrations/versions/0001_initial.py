"""Initial catalog: roots, files, tensors.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPLICATION_ID = 0x64696649


def upgrade() -> None:
    op.create_table(
        "roots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        sa.Column("added_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roots")),
        sa.UniqueConstraint("path", name=op.f("uq_roots_path")),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("root_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["root_id"], ["roots.id"], name=op.f("fk_files_root_id_roots"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("path", name=op.f("uq_files_path")),
    )
    op.create_index(op.f("ix_files_root_id"), "files", ["root_id"], unique=False)
    op.create_index("ix_files_status", "files", ["status"], unique=False)
    op.create_table(
        "tensors",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("px_size", sa.Integer(), nullable=False),
        sa.Column("recipe", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name=op.f("fk_tensors_file_id_files"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("file_id", "px_size", name=op.f("pk_tensors")),
    )
    if op.get_bind().dialect.name == "sqlite":  # marks the file as a difpy-index catalog
        op.execute(f"PRAGMA application_id={APPLICATION_ID}")


def downgrade() -> None:
    op.drop_table("tensors")
    op.drop_index("ix_files_status", table_name="files")
    op.drop_index(op.f("ix_files_root_id"), table_name="files")
    op.drop_table("files")
    op.drop_table("roots")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA application_id=0")
