"""CPU cost of one charge in-process: reserve + approve + all bookkeeping, no Celery.

Starts the sandbox (``--auto-register``) and a database (SQLite, or PostgreSQL with
``--postgres``), inserts N subscriptions due now, runs one walk (which creates the N charges),
then drives every charge with ``process_charge`` one after the other in this process and
reports, per charge: CPU milliseconds of this process (``time.process_time``: our code, the
ORM/Core, the database driver and the HTTP client; the sandbox runs in its own process and is
not counted), wall milliseconds, SQL statements and transactions (counted with SQLAlchemy
engine events: every BEGIN is a transaction, read-only ones included; commits are shown too;
SQLite's ``BEGIN IMMEDIATE`` is sent on the driver's connection and not counted).

It then measures the floor in the same run: the same number of bare reserve+approve pairs
through the same ``NaverPayClient`` (no database), CPU milliseconds per pair. ``--profile``
adds a cProfile summary on CPU time (``time.process_time``) grouped by package, the time of
builtins and the standard library counted to the package that called them.

``--breakdown`` measures, without a profiler, the CPU spent inside the NAVER calls (the whole
client: httpx, httpcore, h11, parsing), inside SQLAlchemy connection methods (statements,
BEGIN, COMMIT, pool checkout and checkin: SQLAlchemy, the driver and the database engine
itself for SQLite) and in the redaction of the recorded bodies; the rest is the charge
engine's own code, tenacity and logging.

``--notify`` makes the merchant want a webhook on success (one outbox row per charge, written
in the transaction of the last transition).

    .venv/bin/python bench/bench_charge_cpu.py --charges 300 [--postgres] [--profile|--breakdown]
                                               [--notify]
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
    """Statements, transactions (BEGINs) and commits seen by an engine.

    Statements are counted around the calls that run them (``Connection.execute`` and
    ``exec_driver_sql``, and the charge path's ``Prepared._run`` on the driver's cursor), not
    with a ``before_cursor_execute`` listener: with one, the charge path takes SQLAlchemy's
    ordinary way (charge_store.Prepared) and this would measure that instead."""

    def __init__(self, engine: sa.Engine) -> None:
        from sqlalchemy.engine import Connection

        from worker.charge_store import Prepared

        self.statements = self.transactions = self.commits = 0
        for owner, name in ((Connection, "execute"), (Connection, "exec_driver_sql"), (Prepared, "_run")):
            self._count(owner, name)
        sa.event.listen(engine, "begin", self._begin)
        sa.event.listen(engine, "commit", self._commit)

    def _count(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += 1
            return original(*args, **kwargs)

        static = isinstance(vars(owner)[name], staticmethod)
        setattr(owner, name, staticmethod(counted) if static else counted)

    def _begin(self, *_: Any) -> None:
        self.transactions += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1


def package_of(filename: str, name: str) -> str:
    """The package a profiled function belongs to (``builtins``/``stdlib``: see by_package)."""
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/work/" in filename or filename.startswith(str(Path.cwd())):
        return "npay-billing:" + "/".join(Path(filename).parts[-2:])
    if "sqlite3" in name:
        return "sqlite3 (driver)"
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    return "stdlib"


def by_package(profile: cProfile.Profile) -> list[tuple[str, float]]:
    """Own time (tottime) per package, largest first; the time of a builtin or standard
    library function is counted to the package of its caller (one level up), so that
    ``isinstance`` in httpx counts as httpx."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    totals: Counter[str] = Counter()
    for (filename, _line, name), (_cc, _nc, tottime, _ct, callers) in stats.items():
        package = package_of(filename, name)
        if package not in ("builtins", "stdlib") or not callers:
            totals[package] += tottime
            continue
        shares = {caller: entry[2] for caller, entry in callers.items()}
        whole = sum(shares.values()) or 1.0
        for (caller_file, _l, caller_name), share in shares.items():
            owner = package_of(caller_file, caller_name)
            totals[owner if owner not in ("builtins", "stdlib") else "stdlib/builtins"] += (
                tottime * share / whole)
    return totals.most_common(16)


class Breakdown:
    """CPU seconds spent inside chosen functions (outermost call only), while enabled."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.enabled, self._depth = False, 0

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled or self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            started = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.process_time() - started
                self.calls[label] += 1
                self._depth -= 1

        static = isinstance(vars(owner).get(name), staticmethod) if isinstance(owner, type) else False
        setattr(owner, name, staticmethod(timed) if static else timed)

    @classmethod
    def install(cls) -> Breakdown:
        from sqlalchemy.engine import Connection

        import worker.recording
        from worker.charge_store import Prepared

        found = cls()
        for name in ("execute", "exec_driver_sql"):
            found.wrap(Connection, name, "database: statements")
        found.wrap(Prepared, "_run", "database: statements")  # the hot path's own statements
        for name in ("begin", "commit", "close"):
            found.wrap(Connection, name, "database: begin/commit/checkin")
        found.wrap(sa.Engine, "connect", "database: begin/commit/checkin")
        for name in ("reserve_payment", "approve_payment"):
            found.wrap(NaverPayClient, name, "NAVER calls (NaverPayClient)")
        found.wrap(worker.recording, "redacted_text", "redacting recorded bodies")
        return found


def floor(client: NaverPayClient, n: int) -> float:
    """CPU seconds of ``n`` bare reserve+approve pairs through ``client`` (no database)."""
    cpu = time.process_time()
    for i in range(n):
        rid, key = f"20261128RE{i:010d}FLOOR1", f"floor-{i}"
        reservation = client.reserve_payment(
            recurrent_id=rid, total_pay_amount=9900, tax_scope_amount=9900, tax_ex_scope_amount=0,
            product_name="월간 구독", merchant_pay_id=key, merchant_user_id=f"u{i}",
            idempotency_key=f"{key}-reserve")
        client.approve_payment(recurrent_id=rid, payment_id=reservation.payment_id,
                               idempotency_key=f"{key}-approve")
    return time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=300)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="CPU inside HTTP and database calls")
    parser.add_argument("--profile-out", metavar="FILE", help="with --profile: keep the pstats file")
    parser.add_argument("--notify", action="store_true", help="a success webhook row per charge")
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
            if args.notify:
                conn.execute(sa.text("UPDATE merchants SET webhook_url = 'http://127.0.0.1:9/hook', "
                                     "notify_on = 'succeeded'"))
        report = walk(db.sessions, datetime.now(UTC))
        ids = report.new_charge_ids
        assert len(ids) == args.charges, report
        client = NaverPayClient(NaverPayConfig(api_base=sandbox.url))
        engine = ChargeEngine(sessions=db.sessions, client_for=lambda _m: client)
        for warm in ids[:10]:
            process_charge(engine, warm, "warm-up")
        timed = ids[10:]
        counts = Counts(db.engine)
        profile = cProfile.Profile(time.process_time) if args.profile else None
        breakdown = Breakdown.install() if args.breakdown else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        if breakdown:
            breakdown.enabled = True
        outcomes = Counter(process_charge(engine, charge_id, "bench").status for charge_id in timed)
        if profile:
            profile.disable()
        if breakdown:
            breakdown.enabled = False
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        n = len(timed)
        assert outcomes == {"succeeded": n}, outcomes
        print(f"db={'postgresql' if pg else 'sqlite'}{' notify' if args.notify else ''} charges={n}: "
              f"{cpu / n * 1000:.2f} ms CPU/charge, {wall / n * 1000:.2f} ms wall/charge, "
              f"{counts.statements / n:.1f} statements/charge, "
              f"{counts.transactions / n:.1f} transactions/charge ({counts.commits / n:.1f} commits)"
              + (" (profiled: CPU inflated)" if profile else "")
              + (" (timers around calls: CPU slightly inflated)" if breakdown else ""))
        if breakdown:
            rest = cpu - sum(breakdown.seconds.values())
            rows = [*breakdown.seconds.most_common(), ("the rest: engine code, tenacity, logs", rest)]
            for label, seconds in rows:
                calls = f"{breakdown.calls[label] / n:4.1f} calls" if label in breakdown.calls else " " * 10
                print(f"  {label:42s} {seconds / n * 1000:6.2f} ms/charge  {seconds / cpu:5.1%}  {calls}")
        if profile:
            if args.profile_out:
                profile.dump_stats(args.profile_out)
            packages = by_package(profile)
            total = sum(t for _, t in packages) or 1
            for package, seconds in packages:
                print(f"  {package:45s} {seconds / n * 1000:6.2f} ms/charge  {seconds / total:5.1%}")
        elif not breakdown:
            for _ in range(2):  # warm up the floor's path too
                floor(client, 10)
            bare = floor(client, n)
            print(f"floor: {bare / n * 1000:.2f} ms CPU per bare reserve+approve pair through "
                  f"NaverPayClient (no database), same run; billing overhead "
                  f"{(cpu - bare) / n * 1000:.2f} ms/charge")
        client.close()
    finally:
        db.engine.dispose()
        for svc in (sandbox, pg):
            if svc:
                svc.stop()


if __name__ == "__main__":
    main()
