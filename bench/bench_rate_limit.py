"""The global rate limit toward NAVER holds across worker processes (issue 8, goal 5).

Starts redis-server, the sandbox (`--auto-register`), a database, beat (walk every second) and
--workers `celery -A worker worker` processes (threads pool), all with
NAVERPAY_RATE_LIMIT=--rate (NAVER calls per second, one bucket for the default partner, burst 1).
N subscriptions are due at once; the workers have far more capacity than the limit, so the
bucket is what paces them. The NAVER call rate is measured from the `charge_attempts` rows
(each stamped when its call returned) over the middle 80 % of the calls (the first and last
tenth are the ramp-up and the tail), and printed with the setting and their ratio; then the
ledger check (exactly N approved payments, no duplicates) and how many charges each worker ran.

    .venv/bin/python bench/bench_rate_limit.py                      # 2 workers, 40 calls/s, 600 subs
    .venv/bin/python bench/bench_rate_limit.py --rate 100 --subscriptions 3000 [--postgres]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import ChargeAttempt, Subscription  # noqa: E402
from tests import services  # noqa: E402
from tests.conftest import Database  # noqa: E402
from tests.processes import Processes, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=40.0, help="NAVERPAY_RATE_LIMIT, calls/s")
    parser.add_argument("--subscriptions", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    print(f"bench_rate_limit: {vars(args)}; load average {os.getloadavg()}", flush=True)
    redis, sandbox = services.start_redis(), services.start_sandbox("--auto-register")
    pg = services.start_postgres() if args.postgres else None
    url = (services.create_pg_database(pg, "bench") if pg
           else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    db = Database(url)
    procs = Processes({"DATABASE_URL": url, "CELERY_BROKER_URL": redis.url,
                       "NAVERPAY_API_BASE": sandbox.url, "BILLING_WALK_INTERVAL": "1",
                       "NAVERPAY_RATE_LIMIT": str(args.rate)})
    n = args.subscriptions
    try:
        for i in range(args.workers):
            procs.worker(f"w{i}", args.concurrency, "--pool", "threads")
        for i in range(args.workers):
            procs.wait_log(f"w{i}", "ready", timeout=60)
        procs.beat()
        procs.wait_log("beat", "Starting", timeout=30)
        now = datetime.now(UTC)
        rows = [{"recurrent_id": f"20261128RE{i:010d}RATE01", "merchant_user_id": f"u{i}",
                 "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                 "cron": "0 0 1 1 *", "next_charge_at": now} for i in range(n)]
        started = time.perf_counter()
        with db.engine.begin() as conn:
            conn.execute(sa.insert(Subscription.__table__), rows)
        wait_for(lambda: db.sql("SELECT count(*) FROM charges WHERE status = 'succeeded'")[0][0] == n,
                 args.timeout, "every charge to succeed", interval=0.2)
        elapsed = time.perf_counter() - started
        with db.engine.connect() as conn:
            stamps = sorted(conn.execute(sa.select(ChargeAttempt.created_at)).scalars())
        calls = len(stamps)
        lo, hi = calls // 10, calls - calls // 10 - 1
        span = (stamps[hi] - stamps[lo]).total_seconds()
        measured = (hi - lo) / span
        ledger = httpx.get(f"{sandbox.url}/_sandbox/ledger", timeout=30).json()
        approved = [p for p in ledger["payments"] if p["state"] == "APPROVED"]
        assert len(approved) == n == len({p["paymentId"] for p in approved}), len(approved)
        per_worker = {f"w{i}": len(re.findall(r"tasks .*: charge \d+ -> succeeded", procs.log(f"w{i}")))
                      for i in range(args.workers)}
        print(f"db={'postgresql' if pg else 'sqlite'} workers={args.workers}x{args.concurrency} threads "
              f"limit={args.rate:g} calls/s: {calls} NAVER calls, measured {measured:.2f} calls/s over "
              f"calls {lo}..{hi} ({span:.1f} s) = {measured / args.rate:.3f} of the limit; "
              f"all {n} charges in {elapsed:.1f} s; charges per worker {per_worker}; "
              f"ledger: {len(approved)} approved, no duplicates; load average {os.getloadavg()}")
    finally:
        procs.stop_all()
        db.engine.dispose()
        for svc in (sandbox, redis, pg):
            if svc:
                svc.stop()


if __name__ == "__main__":
    main()
