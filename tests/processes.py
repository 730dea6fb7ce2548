"""Run the project's processes the way an operator does: ``celery -A worker worker|beat``.

Each process runs with its own log file; ``dump_logs()`` prints them when a test fails so
the failure explains itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.services import ROOT


class Processes:
    """A group of project processes sharing one environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        # Under pytest's temporary directory in tests (tests/conftest.py), else /tmp.
        self.dir = Path(tempfile.mkdtemp(prefix="npay-procs-", dir=os.environ.get("NPAY_PROCS_TMP")))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def worker(self, name: str = "worker", concurrency: int = 2, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(name, "-m", "celery", "-A", "worker", "worker", "-c", str(concurrency),
                          "-n", f"{name}@%h", "--loglevel", "INFO", "--without-mingle",
                          "--without-gossip", *extra)

    def beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        schedule = self.dir / f"{name}-schedule"
        return self.start(name, "-m", "celery", "-A", "worker", "beat", "--loglevel", "INFO",
                          "--schedule", str(schedule))

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float = 30) -> None:
        wait_for(lambda: text in self.log(name), timeout, f"{text!r} in {name}'s log")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a whole process group (a Celery worker and its pool children)."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self, name: str) -> None:
        stop_group(self.procs.pop(name))

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def dump_logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.read_text(errors='replace')[-6000:]}"
                         for p in sorted(self.dir.glob("*.log")))


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM a process group started with ``start_new_session`` (a Celery worker and its
    pool, or honcho, which forwards it to its own children), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
