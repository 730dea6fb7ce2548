"""CPU cost of one charge in-process: reserve + approve + all bookkeeping, no Celery.

Starts the sandbox (``--auto-register``) and a database (SQLite, or PostgreSQL with
``--postgres``), inserts N subscriptions due now, runs one walk (which creates the N charges),
then drives every charge with ``process_charge`` one after the other in this process and
reports, per charge: CPU milliseconds of this process (``time.process_time``: our code, the
ORM/Core, the database driver and the HTTP client; the sandbox runs in its own process and is
not counted), wall milliseconds, SQL statements and transactions (counted with SQLAlchemy
engine events). ``--profile`` adds a cProfile summary grouped by package.

    .venv/bin/python bench/bench_charge_cpu.py --charges 300 [--postgres] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import Subscription  # noqa: E402
from scheduler.walk import walk  # noqa: E402
from tests import services  # noqa: E402
from tests.conftest import Database  # noqa: E402
from worker.charging import ChargeEngine, process_charge  # noqa: E402
from worker.naverpay.client import NaverPayClient  # noqa: E402
from worker.naverpay.config import NaverPayConfig  # noqa: E402


class Counts:
    """Statements and transactions seen by an engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements = self.transactions = 0
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine, "commit", self._commit)

    def _statement(self, *_: Any) -> None:
        self.statements += 1

    def _commit(self, *_: Any) -> None:
        self.transactions += 1


def by_package(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time (tottime) per top-level package, largest first."""
    totals: Counter[str] = Counter()
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        if "site-packages/" in filename:
            package = filename.split("site-packages/")[1].split("/")[0]
        elif "/work/" in filename or filename.startswith(str(Path.cwd())):
            package = "npay-billing:" + "/".join(Path(filename).parts[-2:])
        elif filename.startswith("~") or filename.startswith("<"):
            package = "builtins"
        else:
            package = "stdlib"
        totals[package] += tottime
    return totals.most_common(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=300)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sandbox = services.start_sandbox("--auto-register")
    pg = services.start_postgres() if args.postgres else None
    url = (services.create_pg_database(pg, "bench_cpu") if pg
           else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    db = Database(url)
    try:
        now = datetime.now(UTC)
        rows = [{"recurrent_id": f"20261128RE{i:010d}CPU001", "merchant_user_id": f"u{i}",
                 "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                 "cron": "0 0 1 1 *", "next_charge_at": now} for i in range(args.charges)]
        with db.engine.begin() as conn:
            conn.execute(sa.insert(Subscription.__table__), rows)
        report = walk(db.sessions, datetime.now(UTC))
        ids = report.new_charge_ids
        assert len(ids) == args.charges, report
        client = NaverPayClient(NaverPayConfig(api_base=sandbox.url))
        engine = ChargeEngine(sessions=db.sessions, client_for=lambda _m: client)
        for warm in ids[:10]:
            process_charge(engine, warm, "warm-up")
        timed = ids[10:]
        counts = Counts(db.engine)
        profile = cProfile.Profile() if args.profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        outcomes = Counter(process_charge(engine, charge_id, "bench").status for charge_id in timed)
        if profile:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = len(timed)
        assert outcomes == {"succeeded": n}, outcomes
        print(f"db={'postgresql' if pg else 'sqlite'} charges={n}: "
              f"{cpu / n * 1000:.2f} ms CPU/charge, {wall / n * 1000:.2f} ms wall/charge, "
              f"{counts.statements / n:.1f} statements/charge, "
              f"{counts.transactions / n:.1f} transactions/charge"
              + (" (profiled: CPU inflated)" if profile else ""))
        if profile:
            total = sum(t for _, t in by_package(profile)) or 1
            for package, seconds in by_package(profile):
                print(f"  {package:45s} {seconds / n * 1000:6.2f} ms/charge  {seconds / total:5.1%}")
        client.close()
    finally:
        db.engine.dispose()
        for svc in (sandbox, pg):
            if svc:
                svc.stop()


if __name__ == "__main__":
    main()
