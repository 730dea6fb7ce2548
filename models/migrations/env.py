"""Alembic environment: runs the migrations on the URL given by ``models.migrate``."""

from __future__ import annotations

from typing import Any

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
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations recreate tables (copy, drop, rename); with foreign keys enforced,
            # dropping a table other rows point to fails on any database that has data. The
            # pragma only works outside a transaction, so it goes to the driver's connection
            # before SQLAlchemy begins one; the keys are checked again after the migrations.
            driver: Any = connection.connection.driver_connection
            driver.execute("PRAGMA foreign_keys=OFF")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: "
                                       f"{broken[:5]}")
    engine.dispose()


run_migrations_online()
