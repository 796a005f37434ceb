"""SQLAlchemy 2.0 models of the catalog. The schema itself is owned by Alembic migrations."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Root(Base):
    """A folder given to ``update``; its real path as OS bytes (any filename survives)."""

    __tablename__ = "roots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    added_ns: Mapped[int] = mapped_column(BigInteger)
    updated_ns: Mapped[int | None] = mapped_column(BigInteger)


class File(Base):
    """One image file, keyed by its resolved real path (OS bytes)."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    root_id: Mapped[int] = mapped_column(ForeignKey("roots.id", ondelete="CASCADE"), index=True)
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int | None] = mapped_column(BigInteger)
    # ctime cannot be set back by ``touch -r``: part of the change test (NULL: not seen yet)
    ctime_ns: Mapped[int | None] = mapped_column(BigInteger)
    # 'ok' (decoded) or 'invalid' (error holds the one-line reason)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # EXIF orientation tag 1-8 (NULL: none); the tensor ignores it, as difPy does
    orientation: Mapped[int | None] = mapped_column(Integer)
    # Pillow's format name of the decoded file (JPEG, PNG, HEIF, ...)
    format: Mapped[str | None] = mapped_column(String(16))
    updated_ns: Mapped[int] = mapped_column(BigInteger)


class Tensor(Base):
    """The difPy tensor of a file at one ``px_size``, tagged with the recipe that made it."""

    __tablename__ = "tensors"

    file_id: Mapped[int] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    px_size: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipe: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    # integer sum of every element (rotation-invariant): the partitioned search's sort key
    pixel_sum: Mapped[int | None] = mapped_column(BigInteger)
    # signed 64-bit digests of the bytes, and the smallest over the 4 rotations
    # (``tensorhash``): what ``duplicates`` groups by in SQL (schema 0005)
    digest: Mapped[int | None] = mapped_column(BigInteger)
    turned_digest: Mapped[int | None] = mapped_column(BigInteger)
    # the ``near`` preset's features of this tensor (near.lumas and near.fine_features,
    # float32) and their layout version (near.NEAR_VERSION); NULL or another version:
    # computed again when searched
    near: Mapped[bytes | None] = mapped_column(LargeBinary)
    near_version: Mapped[str | None] = mapped_column(String(16))


Index("ix_files_status", File.status)
