"""End to end against the bare client ceiling, in one run (issue 8, goals 2 and 3).

One redis-server and one sandbox (`--auto-register`, `--latency-ms` added to every NAVER call)
serve both phases:

1. **Ceiling**: `bench/bench_client_sandbox.py --url <this sandbox>` with --processes client
   processes x --threads threads: bare `NaverPayClient` reserve+approve pairs/s, no database,
   no Celery (skipped with --no-client).
2. **Billing**: the same number of worker processes (`--pool threads`: --processes workers of
   `-c --threads` each; `--pool prefork`: one worker with `-c --processes`) and beat (walk every
   second); N subscriptions inserted due now; timed until every charge succeeded. Reported:
   charges/s from the insert to the last success, and the steady rate (the middle 80 % of the
   approvals, by their `approved_at`: the walk's first second and the tail left out).
3. The ratio billing / ceiling (goal 2: >= 0.5), and, with latency, the latency bound of the
   charges in flight (in flight / (2 x latency): two NAVER calls per charge) and the ratio to it
   (goal 3: >= 0.8). Then the ledger check: exactly N approved payments, no duplicates.

    .venv/bin/python bench/bench_e2e.py                                        # goal 2, quick
    .venv/bin/python bench/bench_e2e.py --latency-ms 300 --processes 1 --threads 64 --no-client
    .venv/bin/python bench/bench_e2e.py --latency-ms 300 --processes 2 --threads 128 --no-client
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import Charge, Subscription  # noqa: E402
from tests import services  # noqa: E402
from tests.conftest import Database  # noqa: E402
from tests.processes import Processes, wait_for  # noqa: E402


def _stat_times(path: str) -> tuple[float, float]:
    """User and system CPU seconds in a /proc ``stat`` file (a process's or one thread's)."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (prefork pool processes), from /proc."""
    pids = [pid, *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return sum(sum(_stat_times(f"/proc/{one}/stat")) for one in pids)


def user_system_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (its threads included), from /proc."""
    return _stat_times(f"/proc/{pid}/stat")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's main thread alone (a Celery worker's consumer loop: receive,
    ack, events, logging; the threads pool's tasks run in the other threads)."""
    return sum(_stat_times(f"/proc/{pid}/task/{pid}/stat"))


def _instant(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2, help="client / worker processes")
    parser.add_argument("--threads", type=int, default=8, help="client threads / worker threads per process")
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])
    parser.add_argument("--subscriptions", type=int, default=2000)
    parser.add_argument("--client-pairs", type=int, default=3000)
    parser.add_argument("--no-client", action="store_true", help="skip the bare client phase")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of the workers (e.g. BILLING_TASK_EVENTS=0)")
    parser.add_argument("--py-spy", metavar="FILE", default=None,
                        help="sample the first worker with py-spy (if installed) while billing; "
                             "collapsed stacks written to FILE")
    args = parser.parse_args()
    n = args.subscriptions
    print(f"bench_e2e: {vars(args)}; load average {os.getloadavg()}", flush=True)
    redis, sandbox = services.start_redis(), services.start_sandbox("--auto-register")
    pg = services.start_postgres() if args.postgres else None
    url = (services.create_pg_database(pg, "bench") if pg
           else f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    db = Database(url)
    procs = Processes({"DATABASE_URL": url, "CELERY_BROKER_URL": redis.url,
                       "NAVERPAY_API_BASE": sandbox.url, "BILLING_WALK_INTERVAL": "1",
                       **dict(item.split("=", 1) for item in args.env)})
    try:
        if args.latency_ms:
            httpx.post(f"{sandbox.url}/_sandbox/faults", json={"latencyMs": args.latency_ms},
                       timeout=5).raise_for_status()
        ceiling = None
        if not args.no_client:
            out = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "bench_client_sandbox.py"), "--url", sandbox.url,
                 "--processes", str(args.processes), "--threads", str(args.threads),
                 "--pairs", str(args.client_pairs), "--duration", "30", "--json"],
                check=True, capture_output=True, text=True, cwd=ROOT).stdout
            client = json.loads(out.strip().splitlines()[-1])
            ceiling = float(client["pairs_per_second"])
            print(f"ceiling: bare NaverPayClient {args.processes} processes x {args.threads} threads: "
                  f"{ceiling:.0f} pairs/s (p50 {client['p50_ms']} ms, errors {client['errors']}, "
                  f"CPU {client['cpu_seconds']})", flush=True)
        if args.pool == "threads":
            for i in range(args.processes):
                procs.worker(f"w{i}", args.threads, "--pool", "threads")
            workers = [f"w{i}" for i in range(args.processes)]
            in_flight = args.processes * args.threads
        elif args.pool == "solo":  # one charge at a time per process, no thread switching
            for i in range(args.processes):
                procs.worker(f"w{i}", 1, "--pool", "solo")
            workers = [f"w{i}" for i in range(args.processes)]
            in_flight = args.processes
        else:
            procs.worker("w0", args.processes, "--pool", "prefork")
            workers, in_flight = ["w0"], args.processes
        for name in workers:
            procs.wait_log(name, "ready", timeout=60)
        procs.beat()
        procs.wait_log("beat", "Starting", timeout=30)
        now = datetime.now(UTC)
        rows = [{"recurrent_id": f"20261128RE{i:010d}E2E001", "merchant_user_id": f"u{i}",
                 "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                 "cron": "0 0 1 1 *", "next_charge_at": now} for i in range(n)]
        # Start-up (imports, connecting) is not a charge's cost: CPU is counted from here.
        others = {"sandbox": sandbox.proc.pid, "redis": redis.proc.pid, "beat": procs.procs["beat"].pid}
        others_before = {name: cpu_seconds(pid) for name, pid in others.items()}
        split_before = {name: user_system_seconds(procs.procs[name].pid) for name in workers}
        idle_cpu = {name: (cpu_seconds(procs.procs[name].pid), main_thread_cpu_seconds(procs.procs[name].pid))
                    for name in workers}
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(["py-spy", "record", "--format", "raw", "--rate", "200",
                                    "--nonblocking", "--gil", "-o", args.py_spy, "--pid",
                                    str(procs.procs[workers[0]].pid)], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started, inserted_at = time.perf_counter(), datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(sa.insert(Subscription.__table__), rows)
        wait_for(lambda: db.sql("SELECT count(*) FROM charges WHERE status = 'succeeded'")[0][0] == n,
                 args.timeout, "every charge to succeed", interval=0.2)
        elapsed = time.perf_counter() - started
        if spy is not None:
            spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
            spy.wait(timeout=60)
        with db.engine.connect() as conn:
            approved_at = sorted(conn.execute(sa.select(Charge.approved_at)).scalars())
        with db.engine.connect() as conn:  # per charge: reserve recorded -> approve recorded
            pairs = conn.execute(sa.text(
                "SELECT r.created_at, a.created_at FROM charge_attempts r JOIN charge_attempts a "
                "ON a.charge_id = r.charge_id AND a.kind = 'approve' WHERE r.kind = 'reserve'")).all()
        gaps = sorted((_instant(a) - _instant(r)).total_seconds() * 1000 for r, a in pairs)
        lo, hi = n // 10, n - n // 10 - 1
        steady = (hi - lo) / (approved_at[hi] - approved_at[lo]).total_seconds()
        ledger = httpx.get(f"{sandbox.url}/_sandbox/ledger", timeout=60).json()
        approved = [p for p in ledger["payments"]  # the client phase's payments left out
                    if p["state"] == "APPROVED" and str(p["recurrentId"]).endswith("E2E001")]
        assert len(approved) == n == len({p["paymentId"] for p in approved}), len(approved)
        overall = n / elapsed
        worker_cpu = sum(cpu_seconds(procs.procs[name].pid) - idle_cpu[name][0] for name in workers)
        consumer_cpu = (sum(main_thread_cpu_seconds(procs.procs[name].pid) - idle_cpu[name][1]
                            for name in workers) if args.pool == "threads" else None)
        print(f"billing: db={'postgresql' if pg else 'sqlite'} pool={args.pool} in flight={in_flight} "
              f"({len(workers)} worker process(es)) latency={args.latency_ms}ms N={n}: {elapsed:.1f} s "
              f"= {overall:.0f} charges/s overall, {steady:.0f} charges/s steady; first approval "
              f"{(approved_at[0] - inserted_at).total_seconds():.1f} s after the insert, median "
              f"{statistics.median((a - inserted_at).total_seconds() for a in approved_at):.1f} s; "
              f"ledger: {len(approved)} approved, no duplicates; "
              f"worker CPU after start-up {worker_cpu:.1f} s "
              f"= {worker_cpu / elapsed:.2f} cores, {1000 * worker_cpu / n:.1f} ms per charge"
              + (f" (main thread: consumer loop {1000 * consumer_cpu / n:.1f} ms, pool threads "
                 f"{1000 * (worker_cpu - consumer_cpu) / n:.1f} ms)" if consumer_cpu is not None else ""))
        used = {name: cpu_seconds(pid) - others_before[name] for name, pid in others.items()}
        user = sum(user_system_seconds(procs.procs[w].pid)[0] - split_before[w][0] for w in workers)
        system = sum(user_system_seconds(procs.procs[w].pid)[1] - split_before[w][1] for w in workers)
        print(f"worker CPU split: user {1000 * user / n:.1f} ms, "
              f"system {1000 * system / n:.1f} ms per charge")
        if gaps:
            print(f"per charge, reserve answer recorded -> approve answer recorded: p50 "
                  f"{gaps[len(gaps) // 2]:.0f} ms, p90 {gaps[len(gaps) * 9 // 10]:.0f} ms "
                  f"(the approval call itself: the latency plus our transaction before it)")
        print("other processes, CPU ms per charge: "
              + ", ".join(f"{name} {1000 * seconds / n:.1f}" for name, seconds in used.items()))
        if ceiling:
            print(f"ratio (goal 2, >= 0.5): billing / ceiling = {overall / ceiling:.2f} overall, "
                  f"{steady / ceiling:.2f} steady")
        if args.latency_ms:
            bound = in_flight / (2 * args.latency_ms / 1000)
            print(f"latency bound (goal 3, >= 0.8): {in_flight} in flight / "
                  f"{2 * args.latency_ms / 1000:.1f} s "
                  f"= {bound:.0f} charges/s; billing / bound = {overall / bound:.2f} overall, "
                  f"{steady / bound:.2f} steady")
        print(f"load average at the end {os.getloadavg()}")
    finally:
        procs.stop_all()
        db.engine.dispose()
        for svc in (sandbox, redis, pg):
            if svc:
                svc.stop()


if __name__ == "__main__":
    main()
