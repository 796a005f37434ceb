"""Alembic environment. In-process runs share the caller's connection and transaction;
developer runs (``alembic -x db=PATH ...`` from the repo root) build their own."""

from __future__ import annotations

from alembic import context

from difpy_index.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_with(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


shared = config.attributes.get("connection")
if shared is not None:
    run_with(shared)
else:
    from pathlib import Path

    from difpy_index.store.db import make_engine

    db = context.get_x_argument(as_dictionary=True).get("db", "catalog.sqlite")
    engine = make_engine(Path(db))
    with engine.begin() as conn:
        run_with(conn)
