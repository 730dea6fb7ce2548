"""Refunds through real processes: `celery -A worker worker` and `beat`, a real redis-server, the
sandbox over HTTP, SQLite and PostgreSQL; the refund asked for with `npay-billing refund`, its
events received by a real webhook server."""

from __future__ import annotations

import hashlib
import hmac
import json

from tests.processes import wait_for
from tests.worker.cli_helpers import cli
from tests.worker.test_celery_integration import charges_of, stack, subscribe, webhook

__all__ = ["stack", "webhook"]  # fixtures shared with the charge integration tests


def _refunds(stack):
    return [tuple(r) for r in stack.db.sql("SELECT id, status, amount FROM refunds ORDER BY id")]


def test_refunds_through_the_worker_the_walk_and_the_webhook(stack, webhook):
    url, hooks = webhook
    stack.db.sql("UPDATE merchants SET webhook_url = :u, webhook_secret = 'whsec' WHERE id = 1", u=url)
    rid = subscribe(stack, cron="* * * * * */2")
    stack.worker()
    stack.beat()
    wait_for(lambda: any(r[1] == "succeeded" for r in charges_of(stack, rid)), 45, "a paid charge")
    stack.db.sql("UPDATE subscriptions SET status = 'paused' WHERE recurrent_id = :r", r=rid)
    charge_id = next(r[0] for r in charges_of(stack, rid) if r[1] == "succeeded")
    broker = {"CELERY_BROKER_URL": stack.env["CELERY_BROKER_URL"]}
    # NAVER answers the first cancel CancelNotComplete: refunded, completed by NAVER later.
    stack.sandbox.configure(cancelNotCompleteNext=1, cancelNotCompleteSeconds=2)
    first = cli(stack.db.url, "refund", str(charge_id), "--amount", "3000", "--wait", "--timeout", "30",
                "--json", env=broker)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["status"] == "completing"
    # The walk takes it up again and history confirms it; the rest is refunded after it.
    wait_for(lambda: _refunds(stack)[0][1] == "succeeded", 45, "the walk to confirm the refund")
    second = cli(stack.db.url, "refund", str(charge_id), "--wait", "--timeout", "30", "--json", env=broker)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["charge"]["refunded_amount"] == 9900
    assert [r[1:] for r in _refunds(stack)] == [("succeeded", 3000), ("succeeded", 6900)]
    wait_for(lambda: sum(h[1]["event"] == "refund.succeeded" for h in hooks) == 2, 30, "two refund events")
    events = [(headers, body, raw) for headers, body, raw in hooks if body["event"].startswith("refund.")]
    assert [b["refund"]["amount"] for _, b, _ in events] == [3000, 6900]
    assert events[0][1]["refund"]["completing"] is True  # told once, when NAVER accepted it
    for headers, body, raw in events:
        expected = hmac.new(b"whsec", headers["X-Npay-Billing-Timestamp"].encode() + b"." + raw,
                            hashlib.sha256).hexdigest()
        assert headers["X-Npay-Billing-Signature"] == f"sha256={expected}"
        assert headers["X-Npay-Billing-Event-Id"] == body["event_id"]
    (payment,) = [p for p in stack.sandbox.payments(rid) if p["paymentId"] ==
                  stack.db.sql("SELECT payment_id FROM charges WHERE id = :i", i=charge_id)[0][0]]
    assert payment["state"] == "FULLY_CANCELLED"
