"""The invariants through real processes: `celery -A worker worker` and `beat`, a real
redis-server, the sandbox over HTTP, SQLite and PostgreSQL. Subscriptions are added the way
operators add them: INSERT statements.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis

from tests.processes import Processes, wait_for
from tests.services import free_port
from tests.worker.billing import Sandbox

FINAL = ("succeeded", "failed", "amount_mismatch", "skipped", "canceled")
INSERT = ("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
          "amount, cron, customer_email) VALUES (:rid, :user, 'PLAN-M', '월간 구독', :amount, :cron, "
          ":email)")


@pytest.fixture
def stack(db, redis_service, sandbox_url, request):
    """Worker processes wired to this test's database, the shared Redis and the sandbox."""
    redis.Redis.from_url(redis_service.url).flushdb()
    env = {
        "DATABASE_URL": db.url, "CELERY_BROKER_URL": redis_service.url,
        "NAVERPAY_API_BASE": sandbox_url, "NAVERPAY_APPROVAL_TIMEOUT": "1.5",
        "BILLING_WALK_INTERVAL": "1", "BILLING_LEASE_SECONDS": "6",
        "BILLING_VISIBILITY_TIMEOUT": "20",
    }
    db.sql("UPDATE merchants SET min_cycle_interval = '1s' WHERE id = 1")  # cycles seconds apart
    procs = Processes(env)
    procs.db, procs.sandbox = db, Sandbox(sandbox_url)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(procs.dump_logs())  # the processes' own account of what went wrong


def drain(stack, timeout=45):
    """Stop new cycles, let beat recover anything stuck (after its lease), then stop beat."""
    stack.db.sql("UPDATE subscriptions SET next_charge_at = :far", far="2099-01-01 00:00:00")
    wait_for(lambda: settled(stack), timeout, "in-flight charges to finish")
    for name in [n for n in list(stack.procs) if n.startswith("beat")]:
        stack.stop(name)


def subscribe(stack, behaviour=None, cron="* * * * * */2", amount=9900, email=None):
    rid = stack.sandbox.register(behaviour=behaviour)
    stack.db.sql(INSERT, rid=rid, user="user-1", amount=amount, cron=cron, email=email)
    return rid


def charges_of(stack, rid):
    return [tuple(r) for r in stack.db.sql(
        "SELECT id, status, payment_id, attempt_count FROM charges WHERE recurrent_id = :r "
        "ORDER BY cycle_at", r=rid)]


def settled(stack):
    """No charge is in flight any more (all final, or waiting for a retry)."""
    rows = stack.db.sql("SELECT count(*) FROM charges WHERE status NOT IN "
                        "('succeeded','failed','amount_mismatch','skipped','canceled','retry_wait')")
    return rows[0][0] == 0


def assert_ledger_agrees(stack, rid):
    """Every succeeded charge is one APPROVED payment at NAVER, and nothing else was charged."""
    ours = {row[2] for row in charges_of(stack, rid) if row[1] == "succeeded"}
    theirs = [p["paymentId"] for p in stack.sandbox.approved(rid)]
    assert len(theirs) == len(set(theirs)) == len(ours)
    assert set(theirs) == ours


def test_happy_path_inserted_with_sql_is_charged_once_per_cycle(stack):
    rids = [subscribe(stack) for _ in range(3)]
    # Bad rows inserted with SQL beside them: flagged, and they stop nothing else.
    stack.db.sql(INSERT, rid="RE-bad-cron", user="u", amount=9900, cron="0 9 32 * *", email=None)
    stack.db.sql(INSERT.replace("customer_email)", "customer_email, timezone)").replace(
        ":email)", ":email, 'Seoul/Gangnam')"), rid="RE-bad-zone", user="u", amount=9900,
        cron="* * * * * */2", email=None)
    stack.worker()
    stack.beat()
    for rid in rids:
        wait_for(lambda rid=rid: sum(r[1] == "succeeded" for r in charges_of(stack, rid)) >= 2,
                 45, f"two paid cycles of {rid}")
    drain(stack)
    for rid in rids:
        assert_ledger_agrees(stack, rid)
        cycles = stack.db.sql("SELECT cycle_at FROM charges WHERE recurrent_id = :r", r=rid)
        assert len(cycles) == len(set(cycles))
    bad = dict(stack.db.sql("SELECT recurrent_id, status || ': ' || last_error FROM subscriptions "
                            "WHERE recurrent_id LIKE 'RE-bad-%'"))
    assert bad == {"RE-bad-cron": "invalid: cron '0 9 32 * *': invalid day-of-month field '32'",
                   "RE-bad-zone": "invalid: unknown time zone 'Seoul/Gangnam'; use an IANA name "
                                  "such as 'Asia/Seoul'"}
    assert "subscription" in stack.log("worker") and "is invalid" in stack.log("worker")


class Webhook(BaseHTTPRequestHandler):
    received: list[tuple[dict, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append((dict(self.headers), json.loads(body), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    Webhook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", Webhook.received
    server.shutdown()


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    messages = []

    class Collect(Message):
        def handle_message(self, message):
            messages.append(message)

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, messages
    controller.stop()


def test_declines_until_the_policy_gives_up_expire_and_notify_once(stack, webhook, smtp):
    url, hooks = webhook
    port, mails = smtp
    stack.env.update({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)})
    stack.db.sql("UPDATE merchants SET retry_delays = '1s', max_attempts = 2, webhook_url = :u, "
                 "webhook_secret = 'whsec', notify_email = 1 WHERE id = 1", u=url)
    doomed = subscribe(stack, behaviour={"declineCode": "NotEnoughAccountBalance"},
                       email="customer@example.com", cron="* * * * * */3")
    healthy = subscribe(stack, cron="* * * * * */3")
    recovering = subscribe(stack, behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1},
                           cron="* * * * * */3")
    stack.worker()
    stack.beat()
    wait_for(lambda: stack.db.sql("SELECT status FROM subscriptions WHERE recurrent_id = :r",
                                  r=doomed)[0][0] == "revoked", 60, "the failing registration to be revoked")
    wait_for(lambda: stack.sandbox.registration(doomed)["state"] == "EXPIRED", 10, "NAVER-side expiry")
    wait_for(lambda: any(r[1] == "succeeded" and r[3] == 2 for r in charges_of(stack, recovering)),
             30, "the recovering subscription to succeed on its 2nd attempt")
    wait_for(lambda: sum(r[1] == "succeeded" for r in charges_of(stack, healthy)) >= 2, 30,
             "the healthy subscription to keep billing")
    wait_for(lambda: len(mails) >= 1 and len(hooks) >= 1, 20, "webhook and e-mail delivery")
    drain(stack)
    final = [h for h in hooks if h[1]["event"] == "charge.final_failure"]
    assert len(final) == 1
    headers, payload, raw = final[0]
    assert payload["subscription"]["recurrent_id"] == doomed
    expected = hmac.new(b"whsec", headers["X-Npay-Billing-Timestamp"].encode() + b"." + raw,
                        hashlib.sha256).hexdigest()
    assert headers["X-Npay-Billing-Signature"] == f"sha256={expected}"
    assert headers["X-Npay-Billing-Event-Id"] == payload["event_id"]
    assert len(mails) == 1 and mails[0]["To"] == "customer@example.com"
    assert "최종 실패" in mails[0].get_payload(decode=True).decode()
    assert stack.sandbox.approved(doomed) == []
    for rid in (healthy, recovering):
        assert_ledger_agrees(stack, rid)


def test_timeout_after_naver_charged_is_resolved_without_a_second_approval(stack):
    rid = subscribe(stack, behaviour={"timeoutAfterCommitTimes": 1, "timeoutSeconds": 4},
                    cron="* * * * * */5")
    stack.worker()
    stack.beat()
    wait_for(lambda: any(r[1] == "succeeded" for r in charges_of(stack, rid)), 40, "the charge")
    drain(stack)
    assert_ledger_agrees(stack, rid)
    assert all(p["approvalRequests"] == 1 for p in stack.sandbox.approved(rid))
    kinds = stack.db.sql("SELECT kind, outcome FROM charge_attempts ORDER BY id")
    assert ("approve", "unknownoutcome") in [tuple(k) for k in kinds]
    assert ("history", "ok") in [tuple(k) for k in kinds]


def test_duplicate_messages_and_two_beats_charge_each_cycle_once(stack):
    from worker.app import app

    rids = [subscribe(stack, cron="* * * * * */2") for _ in range(2)]
    stack.worker(concurrency=3)
    stack.beat("beat-1")
    stack.beat("beat-2")
    wait_for(lambda: all(sum(r[1] == "succeeded" for r in charges_of(stack, rid)) >= 2 for rid in rids),
             45, "charges from both beats")
    # Deliver every existing charge message again, three times over.
    app.conf.broker_url = stack.env["CELERY_BROKER_URL"]
    ids = [r[0] for r in stack.db.sql("SELECT id FROM charges")]
    with app.connection_for_write() as conn:
        for _ in range(3):
            for charge_id in ids:
                app.send_task("worker.charge", args=[charge_id], connection=conn)
    wait_for(lambda: redis.Redis.from_url(stack.env["CELERY_BROKER_URL"]).llen("celery") == 0,
             60, "the duplicate messages to be consumed")
    drain(stack)
    for rid in rids:
        assert_ledger_agrees(stack, rid)


def test_worker_killed_mid_charge_finishes_exactly_once_after_restart(stack):
    rid = subscribe(stack, behaviour={"latencyMs": 3000}, cron="0 0 1 1 *")
    stack.db.sql("UPDATE subscriptions SET next_charge_at = CURRENT_TIMESTAMP")
    stack.worker()
    stack.beat()
    wait_for(lambda: [r for r in charges_of(stack, rid) if r[1] == "approving"], 30,
             "the charge to be mid-approval")
    stack.kill("worker")  # SIGKILL to the worker and its pool: no cleanup of any kind
    assert charges_of(stack, rid)[0][1] == "approving"
    stack.worker("worker-2")
    wait_for(lambda: charges_of(stack, rid)[0][1] in FINAL, 60, "the charge to finish")
    assert charges_of(stack, rid)[0][1] == "succeeded"
    assert_ledger_agrees(stack, rid)
    assert len(stack.sandbox.approved(rid)) == 1


def test_flaky_naver_never_charges_a_cycle_twice(stack, request):
    if stack.db.dialect != "sqlite":
        pytest.skip("one database is enough for the chaos run; the invariant is the same")
    rids = [subscribe(stack, cron="* * * * * */2") for _ in range(4)]
    faults = {"errorRate": 0.3, "errorStatus": 503, "maintenanceRate": 0.1, "latencyMs": 20, "seed": 7}
    stack.sandbox.http.post("/_sandbox/faults", json=faults).raise_for_status()
    stack.worker(concurrency=3)
    stack.beat()
    for rid in rids:
        wait_for(lambda rid=rid: sum(r[1] == "succeeded" for r in charges_of(stack, rid)) >= 2,
                 60, f"two paid cycles of {rid} despite the faults")
    stack.sandbox.http.post("/_sandbox/faults", json={}).raise_for_status()
    drain(stack, timeout=60)  # every charge settles once NAVER is healthy again
    outcomes = [tuple(r) for r in stack.db.sql("SELECT outcome, count(*) FROM charge_attempts "
                                               "GROUP BY outcome")]
    assert dict(outcomes).get("transient", 0) > 0  # the faults really happened
    for rid in rids:
        assert_ledger_agrees(stack, rid)


def test_threads_pool_charges_each_cycle_once(stack):
    """The I/O-bound deployment (`--pool threads`): many charges in flight in one process."""
    if stack.db.dialect != "sqlite":
        pytest.skip("one database is enough; the PostgreSQL path is covered by the prefork tests")
    from worker.app import app

    stack.sandbox.http.post("/_sandbox/faults", json={"latencyMs": 50}).raise_for_status()
    rids = [subscribe(stack, cron="* * * * * */2") for _ in range(6)]
    stack.worker("threads", 12, "--pool", "threads")
    stack.beat()
    wait_for(lambda: all(sum(r[1] == "succeeded" for r in charges_of(stack, rid)) >= 2 for rid in rids),
             60, "two paid cycles of every subscription")
    app.conf.broker_url = stack.env["CELERY_BROKER_URL"]
    with app.connection_for_write() as conn:
        for charge_id in [r[0] for r in stack.db.sql("SELECT id FROM charges")]:
            app.send_task("worker.charge", args=[charge_id], connection=conn)
    drain(stack)
    for rid in rids:
        assert_ledger_agrees(stack, rid)


@pytest.mark.parametrize("new_status", ["paused", "canceled"])
def test_pause_or_cancel_during_retries_stops_further_attempts(stack, new_status):
    if stack.db.dialect != "sqlite" and new_status == "canceled":
        pytest.skip("pause covers PostgreSQL; cancel takes the same path")
    stack.db.sql("UPDATE merchants SET retry_delays = '3s', max_attempts = 10 WHERE id = 1")
    rid = subscribe(stack, behaviour={"declineCode": "NotEnoughAccountBalance"}, cron="0 0 1 1 *")
    stack.db.sql("UPDATE subscriptions SET next_charge_at = CURRENT_TIMESTAMP")
    stack.worker()
    stack.beat()
    wait_for(lambda: [r for r in charges_of(stack, rid) if r[1] == "retry_wait"], 30,
             "the first declined attempt")
    stack.db.sql("UPDATE subscriptions SET status = :s", s=new_status)  # what an operator does
    wait_for(lambda: charges_of(stack, rid)[0][1] == "canceled", 20, "the pending retry to be canceled")
    attempts = len(stack.sandbox.payments(rid))
    time.sleep(5)  # longer than the retry delay: no further attempt may start
    assert len(stack.sandbox.payments(rid)) == attempts
    assert charges_of(stack, rid)[0][1] == "canceled"
