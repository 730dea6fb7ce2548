"""End-to-end billing throughput: subscriptions due now -> charges succeeded, through real
processes (`celery -A worker worker` + beat, redis-server, the sandbox over loopback).

N subscriptions are made due at once; the clock starts when they are inserted (workers and
beat already running) and stops when every charge has succeeded. The sandbox ledger is then
checked: exactly N approved payments, one per charge. Bounded: gives up after --timeout.

    .venv/bin/python bench/bench_billing.py --subscriptions 2000 --concurrency 4 [--postgres]
    .venv/bin/python bench/bench_billing.py --latency-ms 300 --pool threads --concurrency 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import Subscription  # noqa: E402
from tests import services  # noqa: E402
from tests.conftest import Database  # noqa: E402
from tests.processes import Processes, wait_for  # noqa: E402


def count(db: Database, status: str) -> int:
    return int(db.sql("SELECT count(*) FROM charges WHERE status = :s", s=status)[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4, help="worker concurrency (-c)")
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads"],
                        help="Celery pool (threads suits I/O-bound NAVER calls)")
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="latency the sandbox adds to every NAVER call (real NAVER: 100s of ms)")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    redis, sandbox = services.start_redis(), services.start_sandbox("--auto-register")
    pg = services.start_postgres() if args.postgres else None
    url = (services.create_pg_database(pg, "bench") if pg
           else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    db = Database(url)
    procs = Processes({"DATABASE_URL": url, "CELERY_BROKER_URL": redis.url,
                       "NAVERPAY_API_BASE": sandbox.url, "BILLING_WALK_INTERVAL": "1"})
    try:
        if args.latency_ms:
            httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latencyMs": args.latency_ms},
                       timeout=5).raise_for_status()
        procs.worker("bench", args.concurrency, "--pool", args.pool)
        procs.wait_log("bench", "ready", timeout=60)
        procs.beat()
        procs.wait_log("beat", "Starting", timeout=30)
        now = datetime.now(UTC)
        rows = [{"recurrent_id": f"20261128RE{i:010d}BENCH1", "merchant_user_id": f"u{i}",
                 "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                 "cron": "0 0 1 1 *", "next_charge_at": now} for i in range(args.subscriptions)]
        started = time.perf_counter()
        with db.engine.begin() as conn:
            conn.execute(sa.insert(Subscription.__table__), rows)
        wait_for(lambda: count(db, "succeeded") == args.subscriptions, args.timeout,
                 "every charge to succeed", interval=0.1)
        elapsed = time.perf_counter() - started
        ledger = httpx.get(f"{sandbox.url}/_sandbox/ledger", timeout=30).json()
        approved = [p for p in ledger["payments"] if p["state"] == "APPROVED"]
        assert len(approved) == args.subscriptions == len({p["paymentId"] for p in approved})
        print(f"db={'postgresql' if pg else 'sqlite'} subscriptions={args.subscriptions} "
              f"pool={args.pool} concurrency={args.concurrency} latency={args.latency_ms}ms: "
              f"{elapsed:.1f} s, "
              f"{args.subscriptions / elapsed:.0f} charges/s (reserve+approve each); "
              f"ledger: {len(approved)} approved, no duplicates")
    finally:
        procs.stop_all()
        db.engine.dispose()
        for svc in (sandbox, redis, pg):
            if svc:
                svc.stop()


if __name__ == "__main__":
    main()
