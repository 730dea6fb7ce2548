"""``npay-billing``: the operator's command line (``main`` is the console script).

Command tree (each module of ``worker/cli/`` holds one group)::

    npay-billing [--database-url URL]
      db upgrade | current                               (db)
      subscriptions add | list | show | pause | resume | cancel   (subscriptions, lifecycle)
      charges list | show | cash-amount                  (charges)
      retry TARGET [--reopen] [--wait]                   (retry)
      refund CHARGE_ID [--amount N] [--wait]             (refund)
      registrations sync | complete                      (registrations)
      reconcile [--date YYYY-MM-DD] [--merchant ID] [--json]   (reconcile)
      consent add | list | record | cancel | link        (consent)
      status | watch                                     (status)
      web                                                (web)
      sandbox                                            (sandbox)
      inbox                                              (inbox)
      metrics                                            (metrics)
      demo                                               (demo)

Configuration comes from the environment like the worker's (``DATABASE_URL``,
``CELERY_BROKER_URL``, ``NAVERPAY_API_BASE``); ``--database-url`` overrides ``DATABASE_URL``.
Every command but ``db upgrade``, ``sandbox`` and ``inbox`` first checks that the database is migrated.
"""

from __future__ import annotations

import click

from worker.cli.charges import charges
from worker.cli.consent import consent
from worker.cli.db import db
from worker.cli.demo import demo
from worker.cli.inbox import inbox
from worker.cli.metrics import metrics
from worker.cli.reconcile import reconcile
from worker.cli.refund import refund
from worker.cli.registrations import registrations
from worker.cli.retry import retry
from worker.cli.sandbox import sandbox
from worker.cli.status import status, watch
from worker.cli.subscriptions import subscriptions
from worker.cli.support import Env
from worker.cli.web import web

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
  npay-billing refund 17 --amount 3000 --reason '부분 환불' --wait
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


main.add_command(db)
main.add_command(subscriptions)
main.add_command(charges)
main.add_command(retry)
main.add_command(status)
main.add_command(watch)
main.add_command(demo)
main.add_command(sandbox)
main.add_command(metrics)
main.add_command(refund)
main.add_command(reconcile)
main.add_command(registrations)
main.add_command(consent)
main.add_command(web)
main.add_command(inbox)
