"""``npay-billing inbox``: real SMTP and real signed webhooks, sent by the worker's own senders
(``worker.notify.EmailSender``/``WebhookSender``) into the running inbox, shown on its page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from models import Merchant, Notification, Subscription
from tests.services import ROOT, free_port, wait_until
from worker.inbox import Inbox, create_app
from worker.notify import EmailSender, WebhookSender, sign

SECRET = "demo-webhook-secret"
MESSAGE = "[월간 구독] 정기결제 9,900원이 3회 시도 끝에 최종 실패했습니다(NotEnoughAccountBalance)."


@contextmanager
def running_inbox(store: Path, *args: str) -> Iterator[dict[str, Any]]:
    port, smtp_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli import main; main()", "inbox", "--port", str(port),
         "--smtp-port", str(smtp_port), "--store", str(store), *args],
        cwd=ROOT, env={**os.environ, "INBOX_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/messages.json", timeout=0.5).status_code == 200,
                   timeout=20, what="npay-billing inbox")
        yield {"url": url, "smtp_port": smtp_port}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def notification(channel: str) -> Notification:
    payload = {"event_id": f"ev-{channel}", "event": "charge.final_failure", "message": MESSAGE,
               "subscription": {"recurrent_id": "20261128RE1003007926ZStYYU"}}
    return Notification(event_id=f"ev-{channel}", channel=channel,
                        payload=json.dumps(payload, ensure_ascii=False))


def subscription() -> Subscription:
    return Subscription(product_name="월간 구독", customer_email="demo-1@example.com")


def webhook_sender() -> WebhookSender:
    return WebhookSender(httpx.Client(timeout=5), lambda: datetime.now(UTC))


def test_an_email_and_signed_webhooks_arrive_and_are_shown(tmp_path):
    with running_inbox(tmp_path / "inbox.jsonl") as inbox:
        EmailSender("127.0.0.1", inbox["smtp_port"], "billing@localhost")(
            notification("email"), Merchant(), subscription())
        webhook_sender()(notification("webhook"),
                         Merchant(webhook_url=f"{inbox['url']}/hooks/demo", webhook_secret=SECRET),
                         subscription())
        with pytest.raises(httpx.HTTPStatusError) as refused:  # a wrong secret: 401, and shown
            webhook_sender()(notification("forged"),
                             Merchant(webhook_url=f"{inbox['url']}/hooks/demo", webhook_secret="wrong"),
                             subscription())
        data = httpx.get(f"{inbox['url']}/messages.json").json()
        page = httpx.get(f"{inbox['url']}/").text

    assert refused.value.response.status_code == 401
    [mail] = data["emails"]
    assert (mail["to"], mail["subject"], mail["event_id"]) == (
        ["demo-1@example.com"], "[월간 구독] 정기결제 안내", "ev-email")
    assert mail["body"].strip() == MESSAGE
    good, forged = data["webhooks"]
    assert (good["event"], good["verified"], good["hook"], good["event_id"]) == (
        "charge.final_failure", True, "demo", "ev-webhook")
    assert good["payload"]["message"] == MESSAGE
    assert forged["verified"] is False
    assert "[월간 구독] 정기결제 안내" in page and MESSAGE in page
    assert page.count("signature verified ✓") == 1 and page.count("signature verified ✗") == 1


def test_what_arrived_survives_a_restart(tmp_path):
    store = tmp_path / "inbox.jsonl"
    with running_inbox(store) as inbox:
        webhook_sender()(notification("webhook"),
                         Merchant(webhook_url=f"{inbox['url']}/hooks/demo", webhook_secret=SECRET),
                         subscription())
    with running_inbox(store) as inbox:
        data = httpx.get(f"{inbox['url']}/messages.json").json()

    assert [h["event_id"] for h in data["webhooks"]] == ["ev-webhook"]


def test_the_app_mounts_under_a_prefix_and_marks_duplicates_and_unsigned_hooks():
    inbox = Inbox(webhook_secret=SECRET)
    client = TestClient(Starlette(routes=[Mount("/inbox", app=create_app(inbox))]))
    body = json.dumps({"event": "charge.succeeded"}).encode()
    signed = {"X-Npay-Billing-Event-Id": "ev-1", "X-Npay-Billing-Timestamp": "1764300000",
              "X-Npay-Billing-Signature": sign(SECRET, "1764300000", body)}

    first = client.post("/inbox/hooks/demo", content=body, headers=signed)
    again = client.post("/inbox/hooks/demo", content=body, headers=signed)  # at-least-once resend
    unsigned = client.post("/inbox/hooks", content=body, headers={"X-Npay-Billing-Event-Id": "ev-2"})
    page = client.get("/inbox/").text

    assert [r.status_code for r in (first, again, unsigned)] == [200, 200, 200]
    hooks = inbox.items("webhook")
    assert [(h["verified"], h["duplicate"], h["hook"]) for h in hooks] == [
        (True, False, "demo"), (True, True, "demo"), (None, False, "default")]
    assert "(duplicate event id)" in page and "not checked" in page


def test_a_body_that_is_not_json_is_kept_as_text():
    inbox = Inbox()

    record = inbox.add_webhook("x", {}, b"\xff not json")

    assert (record["payload"], record["event"], record["verified"]) == ("\ufffd not json", None, None)
