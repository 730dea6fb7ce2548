"""Where a Celery worker's CPU goes per charge: cProfile (CPU time) around a real `celery -A worker worker
--pool solo` (every task in its main thread, so one profiler sees the consumer, kombu, Celery's
task machinery, logging and the charge itself).

Starts redis-server, the sandbox (--auto-register) and an SQLite database, creates N due
charges with the walk task's body (enqueued the way beat's walk enqueues them), runs the worker
under cProfile until all of them succeeded, stops it (warm shutdown) and prints CPU per charge
and the profile's own time grouped by package (standard library and builtins counted to the
package that called them).

    .venv/bin/python bench/profile_worker.py --charges 500
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models import Subscription  # noqa: E402
from models.migrate import upgrade  # noqa: E402
from tests import services  # noqa: E402
from tests.conftest import Database  # noqa: E402
from tests.processes import wait_for  # noqa: E402

OURS = ("worker", "scheduler", "models")
# cProfile on CPU time (process_time), not wall time: a worker mostly waits on sockets.
RUNNER = """
import cProfile, sys, time
from celery.__main__ import main
out = sys.argv.pop(1)
sys.argv[0] = "celery"
profiler = cProfile.Profile(time.process_time)
try:
    profiler.runcall(main)
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


def package(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    for ours in OURS:
        if f"/{ours}/" in filename and str(ROOT) in filename:
            return f"{ours}/" + filename.split(f"/{ours}/", 1)[1]
    return ""  # stdlib or builtin: counted to its caller


def by_package(stats: pstats.Stats) -> dict[str, float]:
    raw = stats.stats  # type: ignore[attr-defined]
    totals: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, callers) in raw.items():
        own = package(filename)
        if own:
            totals[own] += tottime
            continue
        # Split a stdlib/builtin function's own time over its callers' packages.
        weights = {key: value[3] for key, value in callers.items()}  # caller -> cumtime via it
        total = sum(weights.values()) or 1.0
        for (cfile, _l, _n), weight in weights.items():
            totals[package(cfile) or "stdlib (called from stdlib)"] += tottime * weight / total
        if not callers:
            totals["stdlib (no caller)"] += tottime
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=500)
    args = parser.parse_args()
    n = args.charges
    print(f"profile_worker: {vars(args)}; load average {os.getloadavg()}", flush=True)
    redis, sandbox = services.start_redis(), services.start_sandbox("--auto-register")
    workdir = Path(tempfile.mkdtemp())
    url = f"sqlite:///{workdir / 'profile.db'}"
    upgrade(url)
    db = Database(url)
    env = {"DATABASE_URL": url, "CELERY_BROKER_URL": redis.url, "NAVERPAY_API_BASE": sandbox.url,
           "BILLING_WALK_INTERVAL": "60"}
    proc = None
    try:
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            conn.execute(sa.insert(Subscription.__table__), [
                {"recurrent_id": f"20261128RE{i:010d}PROF01", "merchant_user_id": f"u{i}",
                 "product_code": "P", "product_name": "월간 구독", "amount": 9900,
                 "cron": "0 0 1 1 *", "next_charge_at": now} for i in range(n)])
        os.environ.update(env)
        from worker.tasks import walk_task  # noqa: PLC0415 - after the environment is set

        assert walk_task()["charges"] == n
        out = workdir / "worker.prof"
        log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(out), "-A", "worker", "worker",
             "--pool", "solo", "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        started = time.perf_counter()
        wait_for(lambda: db.sql("SELECT count(*) FROM charges WHERE status = 'succeeded'")[0][0] == n,
                 600, "every charge to succeed", interval=0.2)
        elapsed = time.perf_counter() - started
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
        stats = pstats.Stats(str(out))
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"{n} charges in {elapsed:.1f} s through one solo worker; profiled CPU "
              f"{total:.2f} s (start-up and idle polling included; CPU time) = {1000 * total / n:.1f} ms per "
              f"charge under the profiler")
        for name, seconds in sorted(by_package(stats).items(), key=lambda kv: -kv[1])[:22]:
            print(f"  {100 * seconds / total:5.1f} %  {1000 * seconds / n:6.2f} ms/charge  {name}")
        print(f"profile kept at {out} (pstats; e.g. python -m pstats {out})")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        db.engine.dispose()
        for svc in (sandbox, redis):
            svc.stop()


if __name__ == "__main__":
    main()
