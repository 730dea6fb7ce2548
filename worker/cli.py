"""``npay-billing``: the operator's command line (``main`` is the console script).

Command tree (each module below holds one part)::

    npay-billing [--database-url URL]
      db upgrade | current                               (this module)
      subscriptions add | list | show | pause | resume | cancel   (cli_subscriptions, cli_lifecycle)
      charges list | show                                (cli_charges)
      retry TARGET [--reopen] [--wait]                   (cli_retry)
      status | watch                                     (cli_status)
      sandbox                                            (this module)
      demo                                               (cli_demo)

Configuration comes from the environment like the worker's (``DATABASE_URL``,
``CELERY_BROKER_URL``, ``NAVERPAY_API_BASE``); ``--database-url`` overrides ``DATABASE_URL``.
Every command but ``db upgrade`` and ``sandbox`` first checks that the database is migrated.
"""

from __future__ import annotations

import click

from worker.cli_charges import charges
from worker.cli_demo import demo
from worker.cli_format import emit_json
from worker.cli_retry import retry
from worker.cli_status import status, watch
from worker.cli_subscriptions import subscriptions
from worker.cli_support import Env, json_option

EPILOG = """\b
Environment:
  DATABASE_URL        SQLAlchemy URL (default sqlite:///var/npay-billing.db)
  CELERY_BROKER_URL   Redis URL of the broker (default redis://127.0.0.1:6379/0)
  NAVERPAY_API_BASE   NAVER Pay API, or the sandbox (default http://127.0.0.1:8055)
  NAVERPAY_CHAIN_ID   group-type merchants only; unset = no X-NaverPay-Chain-Id header

\b
Examples:
  npay-billing db upgrade
  npay-billing subscriptions add --recurrent-id 20261128RE1003007926ZStYYU \\
      --user user-42 --product-code PLAN-M --product-name '월간 구독' \\
      --amount 9900 --cron '0 9 1 * *'
  npay-billing charges list --status retry_wait
  npay-billing retry 17 --wait
  npay-billing status --json
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", metavar="URL",
              help="Database to use; overrides DATABASE_URL.")
@click.version_option(package_name="npay-billing", prog_name="npay-billing")
@click.pass_context
def main(ctx: click.Context, database_url: str | None) -> None:
    """Operate the NAVER Pay recurring-billing worker: subscriptions, charges, manual
    retries, a status overview, the local sandbox and a demo.

    Tables are for people (times in Asia/Seoul, amounts in 원); pass --json to a command
    for output a script can parse.
    """
    from models.db import database_url_from_env

    env = Env(database_url or database_url_from_env())
    ctx.obj = env
    ctx.call_on_close(env.close)


@main.group()
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8055, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--auto-register", is_flag=True,
              help="Accept any unknown recurrentId as a registration made in NAVER Pay's window "
                   "(demos: rows inserted with SQL get charged). `make run` turns it on.")
@click.option("--chain-id", "chain_ids", multiple=True, metavar="ID",
              help="Accepted X-NaverPay-Chain-Id (repeatable; default: sandbox-chain-id and "
                   "sandbox-recurrent-chain-id). Calls sending another one are InvalidMerchant.")
@click.option("--require-chain-id", is_flag=True,
              help="Refuse calls without X-NaverPay-Chain-Id (a group-type merchant). Off by "
                   "default: NAVER issues chain ids to group-type merchants only.")
def sandbox(host: str, port: int, log_level: str, auto_register: bool,
            chain_ids: tuple[str, ...], require_chain_id: bool) -> None:
    """Run the local NAVER Pay sandbox (a faithful simulator) until Ctrl-C.

    Point the worker at it with NAVERPAY_API_BASE=http://HOST:PORT (the default).
    More switches (faults, windows, credentials): `python -m sandbox --help`.
    """
    from sandbox.server import run

    options: dict[str, object] = {"auto_register": auto_register,
                                  "require_chain_id": require_chain_id}
    if chain_ids:
        options["chain_ids"] = chain_ids
    click.echo(f"NAVER Pay sandbox on http://{host}:{port} (Ctrl-C to stop)", err=True)
    try:
        run(host, port, log_level=log_level, **options)
    except KeyboardInterrupt:
        pass


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9808, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.pass_obj
def metrics(env: Env, host: str, port: int) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until Ctrl-C.

    Database gauges (charges and subscriptions by status, unknown outcomes open, registrations
    expired, notifications pending, the walk's lag) are read at scrape time; the workers'
    counters (charges by outcome, retries, NAVER API latency) are aggregated from
    PROMETHEUS_MULTIPROC_DIR when it is set (set the same directory for the workers).
    """
    from worker.metrics_server import serve

    sessions = env.sessions()
    click.echo(f"metrics on http://{host}:{port}/metrics (Ctrl-C to stop)", err=True)
    try:
        serve(sessions, host, port)
    except KeyboardInterrupt:
        pass


main.add_command(subscriptions)
main.add_command(charges)
main.add_command(retry)
main.add_command(status)
main.add_command(watch)
main.add_command(demo)
