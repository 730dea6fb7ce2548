"""Benchmark: reserve+approve pairs per second with NaverPayClient against the sandbox.

Starts the sandbox itself (``tests.services.start_sandbox()``) unless ``--url`` is given,
creates one registration per worker thread through the control API, then has every thread
charge its registration (``reserve_payment`` then ``approve_payment``) until ``--pairs`` pairs
are done or ``--duration`` seconds have passed, whichever comes first. Prints pairs/s, pair
latency percentiles, errors by class, and the CPU time the client and the sandbox used (when
the sandbox was started here), which tells which side limits the figure.

    .venv/bin/python bench/bench_client_sandbox.py --pairs 5000 --threads 8 --processes 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.naverpay import NaverPayClient, NaverPayConfig, NaverPayError  # noqa: E402


@dataclass
class Tally:
    """What one client process measured over its timed part."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0  # wall clock (time.time()) when the timed part began
    ended: float = 0.0
    cpu: float = 0.0  # CPU seconds this process used in the timed part


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use a running sandbox at this URL instead of starting one")
    parser.add_argument("--pairs", type=int, default=5000, help="reserve+approve pairs in total")
    parser.add_argument("--threads", type=int, default=8, help="client threads per process")
    parser.add_argument("--processes", type=int, default=2,
                        help="client processes (one Python process tops out near 300 pairs/s: "
                             "the HTTP stack is CPU-bound under the GIL)")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="stop after this many seconds even if --pairs is not reached")
    parser.add_argument("--warmup", type=int, default=20, help="untimed pairs per process first")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if min(args.pairs, args.threads, args.processes) < 1 or args.duration <= 0:
        parser.error("--pairs, --threads, --processes and --duration must be positive")
    return args


def register(url: str, count: int) -> list[str]:
    """``count`` fresh VALID registrations (control API)."""
    with httpx.Client(base_url=url, timeout=10) as control:
        ids = []
        for i in range(count):
            response = control.post("/_sandbox/registrations", json={
                "merchantUserId": f"bench-user-{i}", "productCode": f"BENCH-{uuid.uuid4().hex}",
                "productName": "벤치마크", "behaviour": {}})
            response.raise_for_status()
            ids.append(str(response.json()["recurrentId"]))
    return ids


def one_pair(client: NaverPayClient, recurrent_id: str) -> None:
    """Reserve and approve one charge, as the billing engine does."""
    tag = uuid.uuid4().hex
    reservation = client.reserve_payment(
        recurrent_id=recurrent_id, total_pay_amount=9900, tax_scope_amount=9900,
        tax_ex_scope_amount=0, product_name="월간 구독", merchant_pay_id=f"bench-{tag}",
        merchant_user_id="bench-user", idempotency_key=f"r-{tag}")
    client.approve_payment(recurrent_id=recurrent_id, payment_id=reservation.payment_id,
                           idempotency_key=f"a-{tag}")


@dataclass
class Job:
    """One client process's share of the work."""

    url: str
    recurrent_ids: list[str]
    quota: int
    duration: float
    warmup: int


def run_job(job: Job, ready: Callable[[], object]) -> Tally:
    """Warm up, call ``ready()`` (a start barrier), then charge with one thread per
    registration until ``job.quota`` pairs are done or ``job.duration`` has passed."""
    tally = Tally()
    lock = threading.Lock()
    remaining = [job.quota]
    with NaverPayClient(NaverPayConfig(api_base=job.url)) as client:
        for _ in range(job.warmup):
            one_pair(client, job.recurrent_ids[0])
        ready()
        tally.started, cpu_before = time.time(), time.process_time()
        deadline = tally.started + job.duration

        def take() -> bool:
            with lock:
                remaining[0] -= 1
                return remaining[0] >= 0 and time.time() < deadline

        def worker(recurrent_id: str) -> None:
            while take():
                started = time.perf_counter()
                try:
                    one_pair(client, recurrent_id)
                except NaverPayError as exc:
                    with lock:
                        tally.errors[f"{type(exc).__name__}:{exc.code}"] += 1
                    continue
                tally.latencies.append(time.perf_counter() - started)  # list.append is atomic

        threads = [threading.Thread(target=worker, args=(rid,)) for rid in job.recurrent_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        tally.ended, tally.cpu = time.time(), time.process_time() - cpu_before
    return tally


def _child(job: Job, barrier: Any, results: Any) -> None:
    results.put(run_job(job, barrier.wait))


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, url: str, sandbox_pid: int | None) -> tuple[Tally, float]:
    """Run the load in ``args.processes`` processes; returns the merged tally and the
    sandbox's CPU seconds during the timed part (0 when it runs elsewhere)."""
    ids = register(url, args.threads * args.processes)
    quotas = [args.pairs // args.processes + (1 if i < args.pairs % args.processes else 0)
              for i in range(args.processes)]
    jobs = [Job(url, ids[i * args.threads:(i + 1) * args.threads], quotas[i], args.duration,
                args.warmup) for i in range(args.processes)]

    def sandbox_cpu() -> float:
        return cpu_seconds(sandbox_pid) if sandbox_pid else 0.0

    if args.processes == 1:
        marks: list[float] = []

        def ready() -> None:
            marks.append(sandbox_cpu())

        tallies = [run_job(jobs[0], ready)]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(args.processes + 1), ctx.Queue()
        procs = [ctx.Process(target=_child, args=(job, barrier, results)) for job in jobs]
        for proc in procs:
            proc.start()
        barrier.wait()
        marks = [sandbox_cpu()]
        tallies = [results.get() for _ in procs]
        for proc in procs:
            proc.join()
    used = sandbox_cpu() - marks[0]
    merged = Tally(started=min(t.started for t in tallies), ended=max(t.ended for t in tallies))
    for tally in tallies:
        merged.latencies += tally.latencies
        merged.errors.update(tally.errors)
        merged.cpu += tally.cpu
    return merged, used


def report(args: argparse.Namespace, tally: Tally, sandbox_cpu: float) -> dict[str, object]:
    """The figures, as printed."""
    lat = sorted(tally.latencies)
    wall = tally.ended - tally.started

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

    return {
        "pairs": len(lat), "seconds": round(wall, 2),
        "pairs_per_second": round(len(lat) / wall, 1) if wall else 0.0,
        "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        "errors": dict(tally.errors), "threads": args.threads, "processes": args.processes,
        "cpu_seconds": {"client": round(tally.cpu, 2), "sandbox": round(sandbox_cpu, 2)},
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    service = None
    if args.url is None:
        from tests.services import start_sandbox

        service = start_sandbox()
    url = args.url or service.url  # type: ignore[union-attr]
    try:
        tally, sandbox_cpu = measure(args, url, service.proc.pid if service else None)
    finally:
        if service is not None:
            service.stop()
    result = report(args, tally, sandbox_cpu)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    return 0 if result["pairs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
