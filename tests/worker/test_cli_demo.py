"""``npay-billing demo`` against the real sandbox, and ``npay-billing sandbox`` as a process."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.services import ROOT, free_port, wait_until
from tests.worker.billing import Sandbox
from tests.worker.cli_helpers import cli, cli_json
from worker.cli.demo import plan_seeds


def test_demo_seeds_registrations_subscriptions_and_the_policy(db, sandbox_url):
    env = {"NAVERPAY_API_BASE": sandbox_url}
    data = cli_json(db.url, "demo", "--count", "4", "--declining", "1", env=env)
    subs = data["subscriptions"]
    assert [s["behaviour"] for s in subs] == ["declines", "recovers", "approves", "approves"]
    sandbox = Sandbox(sandbox_url)
    behaviours = [sandbox.registration(s["recurrent_id"])["behaviour"] for s in subs]
    assert behaviours[0]["declineCode"] == "NotEnoughAccountBalance"
    assert behaviours[1]["declineTimes"] == 1
    rows = db.sql("SELECT recurrent_id, cron, status, merchant_user_id FROM subscriptions ORDER BY id")
    assert [(r[0], r[1], r[2]) for r in rows] == [(s["recurrent_id"], "* * * * * */10", "active")
                                                  for s in subs]
    assert all(sandbox.registration(r[0])["merchantUserId"] == r[3] for r in rows)
    policy = db.sql("SELECT retry_delays, max_attempts, final_action FROM merchants WHERE id = 1")
    assert tuple(policy[0]) == ("5s", 3, "expire")
    again = cli(db.url, "demo", "--count", "2", "--keep-policy", env=env)  # twice: adds more
    assert again.exit_code == 0 and "npay-billing watch" in again.output
    assert db.sql("SELECT count(*) FROM subscriptions")[0][0] == 6


def test_demo_says_how_to_start_the_sandbox(sqlite_db):
    url = f"http://127.0.0.1:{free_port()}"
    result = cli(sqlite_db.url, "demo", env={"NAVERPAY_API_BASE": url})
    assert result.exit_code == 2
    assert f"the sandbox at {url} is not reachable" in result.stderr
    assert "start it with `npay-billing sandbox`" in result.stderr
    assert sqlite_db.sql("SELECT count(*) FROM subscriptions")[0][0] == 0


def test_plan_seeds_without_declines_has_no_recovery():
    assert [s.role for s in plan_seeds(2, 0)] == ["approves", "approves"]
    assert [s.role for s in plan_seeds(2, 5)] == ["declines", "declines"]


def test_sandbox_command_serves_the_sandbox():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli import main; main()", "sandbox", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=0.5)
                   .json() == {"ok": True}, timeout=15, what="npay-billing sandbox")
        shown = httpx.get(f"http://127.0.0.1:{port}/_sandbox/config").json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert shown["requireChainId"] is False  # calls without a chain id are accepted


def test_sandbox_command_chain_id_options():
    """`npay-billing sandbox --require-chain-id --chain-id ID` (what SANDBOX_ARGS may pass)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli import main; main()", "sandbox", "--port", str(port),
         "--auto-register", "--require-chain-id", "--chain-id", "group-a", "--chain-id", "group-b"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=0.5)
                   .json() == {"ok": True}, timeout=15, what="npay-billing sandbox")
        shown = httpx.get(f"http://127.0.0.1:{port}/_sandbox/config").json()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert (shown["requireChainId"], shown["chainIds"], shown["autoRegister"]) == (
        True, ["group-a", "group-b"], True)



def test_demo_gives_the_default_merchant_the_inbox_channels_even_when_not_seeding(db, sandbox_url):
    env = {"NAVERPAY_API_BASE": sandbox_url, "NPAY_DEMO_WEBHOOK_URL": "http://127.0.0.1:8025/hooks/demo",
           "NPAY_DEMO_WEBHOOK_SECRET": "demo-secret", "NPAY_DEMO_EMAIL": "1"}
    first = cli(db.url, "demo", "--count", "1", "--if-empty", env=env)
    db.sql("UPDATE merchants SET webhook_url = NULL, notify_email = 0 WHERE id = 1")
    again = cli(db.url, "demo", "--if-empty", env=env)  # `make run` a second time: nothing seeded

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "signed webhook to http://127.0.0.1:8025/hooks/demo" in again.output
    assert "not seeding more" in again.output
    assert db.sql("SELECT webhook_url, webhook_secret, notify_email FROM merchants WHERE id = 1") == [
        ("http://127.0.0.1:8025/hooks/demo", "demo-secret", 1)]
    assert db.sql("SELECT count(*) FROM subscriptions")[0][0] == 1


def test_demo_without_channels_leaves_the_merchant_without_them(sqlite_db, sandbox_url):
    result = cli(sqlite_db.url, "demo", "--count", "1", env={"NAVERPAY_API_BASE": sandbox_url})

    assert result.exit_code == 0 and "notifies" not in result.output
    assert sqlite_db.sql("SELECT webhook_url, notify_email FROM merchants WHERE id = 1") == [(None, 0)]
