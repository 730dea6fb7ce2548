"""The month-start spike (issue 8, goal 4): N subscriptions due at the same instant.

1. Fills a fresh database (SQLite, or PostgreSQL with --postgres) with N subscriptions on one
   cron ('0 0 1 * *'), then makes them all due at one instant, just before the walk starts
   (so the lag below counts from the due instant, not from the fill).
2. Starts redis-server, the sandbox (--auto-register, --latency-ms added to every NAVER call)
   and --workers `celery -A worker worker` processes (--pool, --concurrency), unless --walk-only.
3. Runs the walk task's body in this process (`worker.tasks.walk_task`, exactly what beat
   triggers: the walk, each committed batch of new charges enqueued through one Redis
   pipeline) and reports its rate: charges created and enqueued per second (wall and CPU),
   and this process's peak RSS growth (the walk reads bounded batches, never all rows).
4. Starts beat (for retries and stuck charges) and waits until every charge succeeded:
   time to bill them all from the walk's start, charges/s, and the lag of each charge (its
   approval time minus the due instant; also from the walk's start): p50, p99 and max. Then
   the ledger check: exactly N approved payments at the sandbox, N distinct paymentIds and
   merchantPayIds, and they are exactly the payment ids the charges recorded.

Quick runs (the machine is shared):

    .venv/bin/python bench/bench_spike.py --subscriptions 100000 --walk-only [--postgres]
    .venv/bin/python bench/bench_spike.py --subscriptions 3000 [--postgres]
    .venv/bin/python bench/bench_spike.py --subscriptions 3000 --latency-ms 300

Full size (100,000 billed; ~15-30 min per run on 2 cores):

    .venv/bin/python bench/bench_spike.py --subscriptions 100000 [--latency-ms 300] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import Charge, Subscription  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from tests import services  # noqa: E402
from tests.conftest import Database  # noqa: E402
from tests.processes import Processes, wait_for  # noqa: E402


def fill(db: Database, n: int, due: datetime) -> None:
    rows = []
    with db.engine.begin() as conn:
        for i in range(n):
            rows.append({"recurrent_id": f"20261201RE{i:010d}SPIKE1", "merchant_user_id": f"u{i}",
                         "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                         "cron": "0 0 1 * *", "next_charge_at": due, "scheduled_cron": "0 0 1 * *",
                         "scheduled_timezone": "Asia/Seoul"})
            if len(rows) == 10_000:
                conn.execute(sa.insert(Subscription.__table__), rows)
                rows = []
        if rows:
            conn.execute(sa.insert(Subscription.__table__), rows)


def _pct(values: list[float], p: int) -> float:
    """The p-th percentile of sorted ``values`` (nearest rank)."""
    return values[min(len(values) - 1, max(0, -(-p * len(values) // 100) - 1))]


def tree_cpu(pid: int) -> float:
    """CPU seconds of a server process and all its descendants, live or reaped (runuser ->
    the PostgreSQL postmaster -> its backends), from /proc: what the walk made it do."""
    def ticks(one: int, live_only: bool) -> int:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{one}/task/{one}/children").read_text().split()
        except FileNotFoundError:  # ended meanwhile (counted in its parent's reaped time)
            return 0
        own = sum(int(f) for f in fields[11:13 if live_only else 15])
        return own + sum(ticks(int(child), True) for child in children)
    return ticks(pid, False) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=3000)
    parser.add_argument("--walk-only", action="store_true", help="measure the walk; bill nothing")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--pool", default="threads", choices=["prefork", "threads"])
    parser.add_argument("--concurrency", type=int, default=None,
                        help="per worker (default: 8 without latency, 64 with)")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--profile", metavar="FILE",
                        help="write a cProfile of the walk (this process) to FILE")
    args = parser.parse_args()
    concurrency = args.concurrency or (64 if args.latency_ms else 8)
    n = args.subscriptions
    print(f"bench_spike: {vars(args)} concurrency={concurrency}; load average {os.getloadavg()}",
          flush=True)
    redis = services.start_redis()
    sandbox = None if args.walk_only else services.start_sandbox("--auto-register")
    pg = services.start_postgres() if args.postgres else None
    url = (services.create_pg_database(pg, "spike") if pg
           else f"sqlite:///{Path(tempfile.mkdtemp()) / 'spike.db'}")
    upgrade(url)
    db = Database(url)
    env = {"DATABASE_URL": url, "CELERY_BROKER_URL": redis.url, "BILLING_WALK_INTERVAL": "5",
           "NAVERPAY_API_BASE": sandbox.url if sandbox else "http://127.0.0.1:9"}
    procs = Processes(env)
    try:
        fill(db, n, datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))
        if sandbox:
            if args.latency_ms:
                httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latencyMs": args.latency_ms},
                           timeout=5).raise_for_status()
            for i in range(args.workers):
                procs.worker(f"w{i}", concurrency, "--pool", args.pool)
            for i in range(args.workers):
                procs.wait_log(f"w{i}", "ready", timeout=120)
        os.environ.update(env)  # the walk task's runtime reads these
        from worker.tasks import walk_task  # noqa: PLC0415 - after the environment is set

        # Every row due at one instant just before the walk starts (the fill and the workers'
        # start-up are not counted in the lag): the lag of a charge is its approval - due.
        due = datetime.now(UTC).replace(microsecond=0)
        with db.engine.begin() as conn:
            conn.execute(sa.update(Subscription.__table__).values(next_charge_at=due))
        while datetime.now(UTC) <= due:
            time.sleep(0.05)
        rss0 = rss_mb()
        servers = [("Redis", redis.proc.pid)] + ([("PostgreSQL", pg.proc.pid)] if pg else [])
        server_cpu0 = [tree_cpu(pid) for _, pid in servers]
        started, cpu0, walk_at = time.perf_counter(), time.process_time(), datetime.now(UTC)
        if args.profile:
            import cProfile  # noqa: PLC0415

            profiler = cProfile.Profile(time.process_time)
            summary = profiler.runcall(walk_task)
            profiler.dump_stats(args.profile)
        else:
            summary = walk_task()
        walked, cpu = time.perf_counter() - started, time.process_time() - cpu0
        server_cpu = ", ".join(f"{name} {tree_cpu(pid) - before:.2f} s" for (name, pid), before
                               in zip(servers, server_cpu0, strict=True))
        queued = int(Redis.from_url(redis.url).llen("celery"))
        assert summary["charges"] == n, summary
        print(f"walk: {n} charges created and enqueued in {walked:.2f} s = {n / walked:,.0f} charges/s "
              f"(CPU {cpu:.2f} s = {n / cpu:,.0f}/s of CPU); peak RSS +{rss_mb() - rss0:.0f} MB; "
              f"{queued} messages still queued at its end; server CPU meanwhile: {server_cpu}; "
              f"load average {os.getloadavg()}", flush=True)
        if args.walk_only:
            return
        procs.beat()
        wait_for(lambda: db.sql("SELECT count(*) FROM charges WHERE status = 'succeeded'")[0][0] == n,
                 args.timeout, "every charge to succeed", interval=0.5)
        elapsed = time.perf_counter() - started
        with db.engine.connect() as conn:
            approved = sorted(a for a in conn.execute(sa.select(Charge.approved_at)).scalars())
        from_due = [(a - due).total_seconds() for a in approved]
        from_walk = [(a - walk_at).total_seconds() for a in approved]
        ledger = httpx.get(f"{sandbox.url}/_sandbox/ledger", timeout=60).json()  # type: ignore[union-attr]
        payments = [p for p in ledger["payments"] if p["state"] == "APPROVED"]
        ids = {p["paymentId"] for p in payments}
        pay_ids = {p.get("merchantPayId") for p in payments}
        assert len(payments) == n == len(ids) == len(pay_ids), (len(payments), len(ids), len(pay_ids))
        with db.engine.connect() as conn:  # and they are exactly the payments our charges recorded
            recorded = set(conn.execute(sa.select(Charge.payment_id)).scalars())
        assert recorded == ids, (len(recorded), len(ids), len(recorded ^ ids))
        print(f"db={'postgresql' if pg else 'sqlite'} N={n} latency={args.latency_ms}ms "
              f"workers={args.workers}x{concurrency} {args.pool}: all billed {elapsed:.1f} s after the "
              f"walk started = {n / elapsed:.0f} charges/s; lag (approval - due; the walk started "
              f"{(walk_at - due).total_seconds():.2f} s after due): p50 {_pct(from_due, 50):.1f} s, "
              f"p99 {_pct(from_due, 99):.1f} s, max {from_due[-1]:.1f} s (from the walk's start: p50 "
              f"{_pct(from_walk, 50):.1f} s, p99 {_pct(from_walk, 99):.1f} s, max {from_walk[-1]:.1f} s); "
              f"ledger: {len(payments)} approved payments, {len(ids)} distinct paymentIds, "
              f"{len(pay_ids)} distinct merchantPayIds = N, each the payment_id of one charge, no "
              f"duplicates; load average {os.getloadavg()}")
    finally:
        procs.stop_all()
        db.engine.dispose()
        for svc in (sandbox, redis, pg):
            if svc:
                svc.stop()


if __name__ == "__main__":
    main()
