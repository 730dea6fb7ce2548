"""How long one walk takes as the subscriptions table grows, with a fixed amount of due work.

The walk's queries go through partial indexes, so its cost should follow what is *due*, not
what is *stored*. This script fills a fresh database with N subscriptions whose next cycle is
far in the future plus D that are due now, then times walks (the first one creates D charges).

    .venv/bin/python bench/bench_walk.py --rows 10000 100000 --due 1000 [--postgres]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from models import Subscription, make_engine, make_session_factory
from models.migrate import upgrade
from scheduler.walk import WalkConfig, walk


def fill(url: str, rows: int, due: int, now: datetime) -> None:
    engine = make_engine(url)
    far = now + timedelta(days=30)
    past = now - timedelta(seconds=1)
    with engine.begin() as conn:
        batch = []
        for i in range(rows + due):
            batch.append({"recurrent_id": f"RE{i:012d}", "merchant_user_id": f"u{i}",
                          "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                          "cron": "0 9 1 * *", "next_charge_at": past if i < due else far})
            if len(batch) == 5000:
                conn.execute(sa.insert(Subscription.__table__), batch)
                batch = []
        if batch:
            conn.execute(sa.insert(Subscription.__table__), batch)
    engine.dispose()


def measure(url: str, rows: int, due: int) -> dict[str, float]:
    now = datetime.now(UTC)
    upgrade(url)
    started = time.perf_counter()
    fill(url, rows, due, now)
    filled = time.perf_counter() - started
    sessions = make_session_factory(make_engine(url))
    t0 = time.perf_counter()
    report = walk(sessions, now, WalkConfig())
    first = time.perf_counter() - t0
    assert len(report.new_charge_ids) == due, (len(report.new_charge_ids), due)
    t0 = time.perf_counter()
    for _ in range(5):
        walk(sessions, now, WalkConfig())
    idle = (time.perf_counter() - t0) / 5
    return {"rows": rows, "due": due, "fill_s": filled, "walk_with_due_s": first, "idle_walk_ms": idle * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 10000, 100000],
                        help="subscriptions that are NOT due (default: 1000 10000 100000)")
    parser.add_argument("--due", type=int, default=1000, help="subscriptions due now (default 1000)")
    parser.add_argument("--postgres", action="store_true", help="use a throwaway PostgreSQL cluster")
    args = parser.parse_args()
    service = None
    if args.postgres:
        from tests import services

        service = services.start_postgres()
    try:
        print(f"{'db':10} {'not due':>9} {'due':>6} {'walk creating charges':>22} {'idle walk':>10}")
        for rows in args.rows:
            if service:
                url, db = services.create_pg_database(service, f"bench_{rows}"), "postgresql"
            else:
                url, db = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}", "sqlite"
            r = measure(url, rows, args.due)
            print(f"{db:10} {rows:>9} {args.due:>6} {r['walk_with_due_s']:>20.2f} s "
                  f"{r['idle_walk_ms']:>7.1f} ms", flush=True)
    finally:
        if service:
            service.stop()


if __name__ == "__main__":
    main()
