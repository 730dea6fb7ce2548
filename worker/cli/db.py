"""``npay-billing db``: create or inspect the schema (Alembic migrations)."""

from __future__ import annotations

import click

from worker.cli.output import emit_json
from worker.cli.support import Env, json_option


@click.group()
def db() -> None:
    """Create or inspect the database schema (Alembic migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(env: Env) -> None:
    """Apply every migration (safe to run again); prints the revision reached."""
    from models.migrate import upgrade

    env.revision()  # fails with a clear message when the database cannot be reached
    upgrade(env.database_url)
    current, _ = env.revision()
    click.echo(f"database at {env.shown_url} is at revision {current} (up to date)")


@db.command("current")
@json_option
@click.pass_obj
def db_current(env: Env, as_json: bool) -> None:
    """Print the database's revision and whether it is up to date (exit 1 if not)."""
    from models.migrate import head_revision

    current, up_to_date = env.revision()
    if as_json:
        emit_json({"database": env.shown_url, "revision": current, "head": head_revision(),
                   "up_to_date": up_to_date})
    elif up_to_date:
        click.echo(f"revision {current} (up to date)")
    else:
        click.echo(f"revision {current or 'none'}, head is {head_revision()}: "
                   "run `npay-billing db upgrade`")
    if not up_to_date:
        raise SystemExit(1)
