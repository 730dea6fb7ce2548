"""``npay-billing reconcile``: reconcile a KST day with NAVER's payment history (정산 대사).

Runs :func:`worker.reconciliation.reconcile_pass` in this process (no broker needed): pulls
the day's history page by page (progress on stderr), repairs what history proves through the
charge state machine, records a run per merchant and prints what is left. Exit codes: 0
nothing left; 1 differences remain (reported or deferred); 2 a run failed or bad input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import emit_json, fields, table, won
from worker.cli.support import CliError, SetupError, current_env, json_option

if TYPE_CHECKING:
    from worker.charging import ChargeEngine
    from worker.reconciliation import RunReport


class Remaining(CliError):
    """Differences with NAVER remain after the run (exit code 1)."""


def _engine() -> ChargeEngine:
    from worker.charge_store import MerchantSettings
    from worker.charging import ChargeEngine
    from worker.metrics import observe_naverpay
    from worker.naverpay.client import NaverPayClient
    from worker.runtime import merchant_config
    from worker.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    clients: dict[int, NaverPayClient] = {}

    def client_for(merchant: MerchantSettings) -> NaverPayClient:
        if merchant.id not in clients:
            clients[merchant.id] = NaverPayClient(merchant_config(settings.naverpay, merchant),
                                                  observer=observe_naverpay)
        return clients[merchant.id]

    return ChargeEngine(sessions=current_env().sessions(), client_for=client_for, lease=settings.lease)


@click.command()
@click.option("--date", "day", metavar="YYYY-MM-DD",
              help="The day to reconcile, in Asia/Seoul (default: yesterday in KST).")
@click.option("--merchant", "merchants", type=int, multiple=True, metavar="ID",
              help="Only this merchant (repeatable; default: every merchant with a subscription).")
@json_option
def reconcile(day: str | None, merchants: tuple[int, ...], as_json: bool) -> None:
    """Compare NAVER's payment history of a KST day with our charges (and refunds): repair what
    history proves (a charge left unknown/approving) through the charge state machine, report
    the rest. Each run is recorded in reconciliation_runs / reconciliation_items; a webhook
    ``reconciliation.mismatch`` goes out when anything is left. Exit code 1 when differences
    remain."""
    from models import utcnow
    from worker.reconciliation import Reconciler, TableRefunds, parse_day, previous_day, reconcile_pass

    try:
        target = parse_day(day) if day else previous_day(utcnow())
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    engine = _engine()
    rec = Reconciler(engine, TableRefunds(engine.sessions), progress=_progress)
    try:
        reports = reconcile_pass(rec, target, list(merchants) or None)
    except ValueError as exc:  # an unknown --merchant
        raise SetupError(str(exc)) from None
    if as_json:
        emit_json({"day": target.isoformat(), "runs": [r.to_json() for r in reports]})
    else:
        for report in reports:
            _print(report)
        if not reports:
            click.echo(f"{target}: no merchant to reconcile")
    failed = [r for r in reports if r.status != "done"]
    if failed:
        raise SetupError("; ".join(f"run {r.run_id} (merchant {r.merchant_id}) failed: {r.error}"
                                   for r in failed))
    left = sum(len(r.remaining) for r in reports)
    if left:
        raise Remaining(f"{left} difference(s) with NAVER remain for a human or the next run")


def _progress(line: str) -> None:
    click.echo(line, err=True)  # stderr: --json output on stdout stays parseable


def _print(report: RunReport) -> None:
    data: dict[str, Any] = report.to_json()
    click.echo(fields([
        ("run", f"{report.run_id} (merchant {report.merchant_id}, {report.status})"),
        ("day", f"{data['day']} KST  [{data['window']['start']} .. {data['window']['end']})"),
        ("NAVER rows", report.naver_rows), ("local charges", report.local_charges),
        ("repaired", len(report.repaired)), ("remaining", len(report.remaining)),
        *([("error", report.error)] if report.error else []),
    ]))
    if report.findings:
        click.echo(table(
            ["KIND", "RESOLUTION", "CHARGE", "PAYMENT ID", "NAVER", "LOCAL", "STATUS", "DETAIL"],
            [[f.kind.value, f.resolution.value, f.charge_id or "-", f.payment_id or "-",
              won(f.naver_amount), won(f.local_amount), f.local_status or "-", f.detail]
             for f in report.findings],
            right=["CHARGE", "NAVER", "LOCAL"]))
    click.echo("")
