"""Alembic environment: runs the migrations on the URL given by ``models.migrate``."""

from __future__ import annotations

from alembic import context

from models.db import database_url_from_env, make_engine
from models.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate the database named by the config (or ``DATABASE_URL``)."""
    url = config.get_main_option("sqlalchemy.url") or database_url_from_env()
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
