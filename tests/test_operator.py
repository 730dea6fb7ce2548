"""`make run` as an operator uses it: the processes it starts (scripts/run.sh under honcho),
a subscription inserted with SQL, a manual `npay-billing retry --wait`, Flower's HTTP API,
the metrics endpoint, the logs, and Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import stop_group, wait_for
from tests.services import ROOT, free_port
from tests.worker.billing import Sandbox

SECRET = "sandbox-client-secret"


PORTS = ("SANDBOX_PORT", "FLOWER_PORT", "METRICS_PORT", "REDIS_PORT", "INBOX_PORT", "INBOX_SMTP_PORT",
         "WEB_PORT")


@pytest.fixture
def make_run(tmp_path, request):
    ports = {name: free_port() for name in PORTS}
    demo = getattr(request, "param", "0")  # parametrize indirectly with "1" for the demo
    env = {**os.environ, "NPAY_VAR_DIR": str(tmp_path / "var"), "NPAY_DEMO": demo,
           "BILLING_WALK_INTERVAL": "1", "WATCH_INTERVAL": "1", "BILLING_LEASE_SECONDS": "10",
           **{k: str(v) for k, v in ports.items()}}
    for name in ("CELERY_BROKER_URL", "DATABASE_URL", "NAVERPAY_API_BASE", "SMTP_HOST", "SMTP_PORT",
                 "INBOX_WEBHOOK_SECRET", "NPAY_DEMO_WEBHOOK_URL", "NPAY_DEMO_WEBHOOK_SECRET",
                 "NPAY_DEMO_EMAIL"):
        env.pop(name, None)  # let run.sh choose them (its private redis-server, the inbox...)
    log = open(tmp_path / "make-run.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    run = type("MakeRun", (), {})()
    run.proc, run.env, run.ports, run.dir = proc, env, ports, tmp_path
    run.db = tmp_path / "var" / "npay-billing.db"
    run.output = lambda: (tmp_path / "make-run.log").read_text(errors="replace")
    yield run
    # SIGTERM first: honcho forwards it to every process it started (they run in their own
    # sessions, so a SIGKILL of this group alone would leave them running).
    stop_group(proc, timeout=30)
    log.close()


def sql(run, statement, *params):
    with sqlite3.connect(run.db) as conn:
        return conn.execute(statement, params).fetchall()


def cli(run, *args, timeout=90):
    env = {**run.env, "DATABASE_URL": f"sqlite:///{run.db}",
           "CELERY_BROKER_URL": f"redis://127.0.0.1:{run.ports['REDIS_PORT']}/0"}
    command = str(Path(sys.executable).parent / "npay-billing")  # the console script
    return subprocess.run([command, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_make_run_end_to_end(make_run):
    run = make_run
    sandbox_url = f"http://127.0.0.1:{run.ports['SANDBOX_PORT']}"
    flower = f"http://127.0.0.1:{run.ports['FLOWER_PORT']}"
    wait_for(lambda: "Ctrl-C stops everything" in run.output(), 60, "run.sh to start honcho")
    wait_for(lambda: _up(f"{sandbox_url}/_sandbox/health"), 30, "the sandbox")

    # An operator adds subscriptions with plain SQL. Any recurrentId works in make run's
    # sandbox; the second one's registration declines its first approval.
    sql(run, "UPDATE merchants SET max_attempts = 1, final_action = 'none', min_cycle_interval = '5s' "
             "WHERE id = 1")  # the first subscription bills every 5 s
    declines_once = Sandbox(sandbox_url).register(behaviour={"declineCode": "NotEnoughAccountBalance",
                                                             "declineTimes": 1})
    insert = ("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
              "amount, cron) VALUES (?, ?, 'PLAN-M', '월간 구독', 9900, ?)")
    sql(run, insert, "20261128RE1003007926ZStYYU", "user-42", "* * * * * */5")
    sql(run, insert, declines_once, "user-43", "0 0 1 1 *")
    sql(run, "UPDATE subscriptions SET next_charge_at = CURRENT_TIMESTAMP WHERE recurrent_id = ?",
        declines_once)
    wait_for(lambda: sql(run, "SELECT count(*) FROM charges WHERE recurrent_id = ? AND "
                              "status = 'succeeded'", "20261128RE1003007926ZStYYU")[0][0] >= 1,
             60, "the SQL-inserted subscription to be charged")
    failed = wait_for(lambda: sql(run, "SELECT id FROM charges WHERE recurrent_id = ? AND status = "
                                       "'failed'", declines_once), 30, "the declined charge to fail")
    charge_id = str(failed[0][0])

    # Retry it by hand and follow it to its end.
    refused = cli(run, "retry", charge_id)
    assert refused.returncode == 1 and "--reopen" in refused.stderr
    retried = cli(run, "retry", charge_id, "--reopen", "--wait", "--timeout", "60")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "succeeded" in retried.stdout
    assert sql(run, "SELECT status FROM charges WHERE id = ?", charge_id) == [("succeeded",)]

    # Flower: behind basic auth, and task arguments are ids only.
    assert httpx.get(f"{flower}/api/tasks").status_code == 401
    tasks = wait_for(lambda: _flower_tasks(flower), 30, "Flower to list tasks")
    charges = [t for t in tasks.values() if t["name"] == "worker.charge"]
    assert charges and all(t["args"].strip("[]()").strip(", ").isdigit() for t in charges)
    text = httpx.get(f"{flower}/api/tasks", auth=("admin", "npay-billing")).text
    assert SECRET not in text and "user-42" not in text

    # Metrics: business gauges and the workers' counters.
    metrics = httpx.get(f"http://127.0.0.1:{run.ports['METRICS_PORT']}/metrics").text
    assert _sample(metrics, 'npay_charges{status="succeeded"}') >= 2
    assert "npay_naverpay_request_seconds_count" in metrics
    assert "npay_walk_lag_seconds" in metrics

    # Logs carry the charge id and recurrentId, never the secret.
    worker_log = (run.dir / "var" / "log" / "worker.log").read_text()
    assert f"charge={charge_id} recurrent={declines_once}" in worker_log
    assert SECRET not in worker_log and SECRET not in run.output()
    assert "succeeded" in run.output()  # the live progress line

    # The registration pages: the demo merchant page loads NAVER's SDK from the sandbox.
    web = f"http://127.0.0.1:{run.ports['WEB_PORT']}"
    wait_for(lambda: _up(f"{web}/healthz"), 30, "the web app")
    order = httpx.post(f"{web}/start", data={"plan": "PLAN-M", "user": "user-44"}, timeout=10)
    assert order.status_code == 200 and f"{sandbox_url}/sdk/js/naverpay.min.js" in order.text

    # Ctrl-C stops every process.
    os.killpg(run.proc.pid, signal.SIGINT)
    run.proc.wait(timeout=30)
    wait_for(lambda: not _up(f"{sandbox_url}/_sandbox/health"), 10, "the sandbox to stop")
    assert not _up(f"{flower}/")
    assert not _up(f"{web}/healthz")


@pytest.mark.parametrize("make_run", ["1"], indirect=True)
def test_make_run_demo_final_failure_reaches_the_inbox(make_run):
    """Issue 10: a newcomer running `make run` sees a customer being told about a final
    failure: the Korean e-mail and the signed webhook, verified, on the inbox page."""
    run = make_run
    inbox = f"http://127.0.0.1:{run.ports['INBOX_PORT']}"
    wait_for(lambda: "Ctrl-C stops everything" in run.output(), 60, "run.sh to start honcho")
    wait_for(lambda: _up(f"{inbox}/messages.json"), 30, "the inbox")
    merchant = wait_for(lambda: sql(run, "SELECT webhook_url, notify_email FROM merchants WHERE id = 1 "
                                         "AND webhook_url IS NOT NULL"), 60, "the demo merchant's channels")
    assert merchant == [(f"{inbox}/hooks/demo", 1)]

    def final_failures():
        data = httpx.get(f"{inbox}/messages.json", timeout=5).json()
        hooks = [h for h in data["webhooks"] if h["event"] == "charge.final_failure"]
        mails = [m for m in data["emails"] if "최종 실패" in m["body"]]
        return (hooks, mails) if hooks and mails else None

    hooks, mails = wait_for(final_failures, 120, "the demo's final failure in the inbox")
    assert all(h["verified"] is True for h in hooks)
    assert hooks[0]["payload"]["subscription"]["status"] in ("revoking", "revoked")
    assert mails[0]["subject"].endswith("정기결제 안내") and mails[0]["to"][0].endswith("@example.com")
    page = httpx.get(f"{inbox}/").text
    assert "signature verified ✓" in page and "최종 실패" in page
    assert sql(run, "SELECT count(*) FROM notifications WHERE status = 'no_channel'") == [(0,)]


def _up(url):
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


def _flower_tasks(flower):
    response = httpx.get(f"{flower}/api/tasks", auth=("admin", "npay-billing"), timeout=5)
    tasks = response.json() if response.status_code == 200 else {}
    return tasks if any(t["name"] == "worker.charge" for t in tasks.values()) else None


def _sample(metrics, name):
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
