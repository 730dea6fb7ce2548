"""Benchmark: reserve+approve pairs per second with NaverPayClient against the sandbox.

Starts the sandbox itself (``tests.services.start_sandbox()``) unless ``--url`` is given,
creates one registration per worker thread through the control API, then has every thread
charge its registration (``reserve_payment`` then ``approve_payment``) until ``--pairs`` pairs
are done or ``--duration`` seconds have passed, whichever comes first. Prints pairs/s, pair
latency percentiles, errors by class, and the CPU time the client and the sandbox used (when
the sandbox was started here), which tells which side limits the figure.

    .venv/bin/python bench/bench_client_sandbox.py --pairs 5000 --threads 8
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.naverpay import NaverPayClient, NaverPayConfig, NaverPayError  # noqa: E402


@dataclass
class Tally:
    """What one process measured."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="use a running sandbox at this URL instead of starting one")
    parser.add_argument("--pairs", type=int, default=5000, help="reserve+approve pairs in total")
    parser.add_argument("--threads", type=int, default=8, help="client threads per process")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
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


def run_process(url: str, recurrent_ids: list[str], quota: int, deadline: float,
                warmup: int) -> Tally:
    """Charge with one thread per registration until ``quota`` pairs or ``deadline``."""
    tally = Tally()
    lock = threading.Lock()
    remaining = [quota]
    with NaverPayClient(NaverPayConfig(api_base=url)) as client:
        for _ in range(warmup):
            one_pair(client, recurrent_ids[0])

        def worker(recurrent_id: str) -> None:
            while time.time() < deadline:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                try:
                    one_pair(client, recurrent_id)
                except NaverPayError as exc:
                    with lock:
                        tally.errors[f"{type(exc).__name__}:{exc.code}"] += 1
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    tally.latencies.append(elapsed)

        threads = [threading.Thread(target=worker, args=(rid,)) for rid in recurrent_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return tally


def _process_entry(args: tuple[str, list[str], int, float, int]) -> Tally:
    return run_process(*args)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process and its reaped children so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def measure(args: argparse.Namespace, url: str) -> tuple[Tally, float]:
    """Run the load; returns the merged tally and the wall time of the timed part."""
    per_process = args.threads
    ids = register(url, per_process * args.processes)
    quotas = [args.pairs // args.processes + (1 if i < args.pairs % args.processes else 0)
              for i in range(args.processes)]
    started = time.perf_counter()
    deadline = time.time() + args.duration
    jobs = [(url, ids[i * per_process:(i + 1) * per_process], quotas[i], deadline, args.warmup)
            for i in range(args.processes)]
    if args.processes == 1:
        tallies = [_process_entry(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
            tallies = pool.map(_process_entry, jobs)
    wall = time.perf_counter() - started
    merged = Tally()
    for tally in tallies:
        merged.latencies += tally.latencies
        merged.errors.update(tally.errors)
    return merged, wall


def report(args: argparse.Namespace, tally: Tally, wall: float,
           cpu: dict[str, float]) -> dict[str, object]:
    """The figures, as printed."""
    lat = sorted(tally.latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0.0

    return {
        "pairs": len(lat), "seconds": round(wall, 2),
        "pairs_per_second": round(len(lat) / wall, 1) if wall else 0.0,
        "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        "errors": dict(tally.errors), "threads": args.threads, "processes": args.processes,
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
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
        pids = {"client": os.getpid(), **({"sandbox": service.proc.pid} if service else {})}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        tally, wall = measure(args, url)
        cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    finally:
        if service is not None:
            service.stop()
    result = report(args, tally, wall, cpu)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")
    return 0 if result["pairs"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
