"""The demo's inbox: what a merchant and its customers receive from npay-billing, on a page.

``npay-billing inbox`` (``make run`` starts it) plays both receivers of a notification::

    worker ──SMTP──────────────▶ SMTP catcher (aiosmtpd) ──▶ Inbox.add_email ───┐
    worker ──POST /hooks/NAME──▶ webhook receiver ─verify()─▶ Inbox.add_webhook ──┤──▶ var/inbox.jsonl
    person ──GET /──────────────▶ page: e-mails (decoded Korean subject/body),   │   (one JSON object
                                  webhooks (event, payload, signature ✓/✗)   ◀──┘    per line)
    script ──GET /messages.json─▶ the same, as JSON

The webhook receiver checks ``X-Npay-Billing-Signature`` with :func:`worker.notify.verify`,
the counterpart of the :func:`worker.notify.sign` the worker signs with, using the secret the
demo merchant was given (``webhook_secret``). A valid signature is answered 200; a wrong one
is stored (shown with ✗) and answered 401, as a real receiver would, so the worker retries
it; without a configured secret nothing can be checked and the row says so. A repeated
``X-Npay-Billing-Event-Id`` (at-least-once delivery) is stored and marked as a duplicate.

:func:`create_app` returns the Starlette app alone (routes are relative, so it can be
mounted under ``/inbox`` in another app); :func:`start_smtp` starts the catcher, which runs
in its own thread; :func:`serve` runs both.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from worker.notify import verify

Record = dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Inbox:
    """Received e-mails and webhooks, newest last; appended to ``path`` (JSON lines) if set,
    and read back from it on start, so a restart of ``make run`` keeps what arrived."""

    path: Path | None = None
    webhook_secret: str | None = None
    limit: int = 500
    clock: Callable[[], datetime] = _now
    _items: list[Record] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            self._items = [json.loads(line) for line in lines[-self.limit:] if line.strip()]

    def items(self, kind: str | None = None) -> list[Record]:
        """What arrived, oldest first (``kind``: ``email`` or ``webhook``)."""
        with self._lock:
            return [dict(item) for item in self._items if kind is None or item["kind"] == kind]

    def _add(self, record: Record) -> Record:
        record = {"received_at": self.clock().isoformat(), **record}
        with self._lock:
            self._items.append(record)
            del self._items[:-self.limit]
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return record

    def add_email(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> Record:
        """Store one message as the SMTP catcher received it, decoded."""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain", "html"))
        return self._add({
            "kind": "email", "from": mail_from, "to": rcpt_tos,
            "subject": str(message.get("Subject", "")),
            "body": body.get_content() if isinstance(body, EmailMessage) else "",
            "event_id": message.get("X-Npay-Billing-Event-Id"),
        })

    def add_webhook(self, name: str, headers: dict[str, str], body: bytes) -> Record:
        """Store one webhook POST with the result of checking its signature."""
        event_id = headers.get("x-npay-billing-event-id")
        timestamp = headers.get("x-npay-billing-timestamp", "")
        signature = headers.get("x-npay-billing-signature")
        if self.webhook_secret is None or signature is None:
            verified = None  # nothing to check against (no secret here, or none sent)
        else:
            verified = verify(self.webhook_secret, timestamp, body, signature)
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = body.decode("utf-8", "replace")
        seen = event_id is not None and any(
            item.get("event_id") == event_id for item in self.items("webhook"))
        return self._add({
            "kind": "webhook", "hook": name, "event_id": event_id, "timestamp": timestamp,
            "signature": signature, "verified": verified, "duplicate": seen,
            "event": payload.get("event") if isinstance(payload, dict) else None,
            "payload": payload,
        })


# --- SMTP ------------------------------------------------------------------------------------

class _SmtpHandler:
    """aiosmtpd handler: every message goes to the inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.inbox.add_email(envelope.original_content or envelope.content, envelope.mail_from,
                             list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


def start_smtp(inbox: Inbox, host: str = "127.0.0.1", port: int = 2525) -> Any:
    """Start the SMTP catcher in its own thread; returns the aiosmtpd controller (``.stop()``)."""
    from aiosmtpd.controller import Controller

    controller = Controller(_SmtpHandler(inbox), hostname=host, port=port)
    controller.start()
    return controller


# --- HTTP ------------------------------------------------------------------------------------

def create_app(inbox: Inbox) -> Starlette:
    """The inbox's web app: ``GET /`` the page, ``GET /messages.json``, ``POST /hooks/{name}``.
    Paths are relative to where it is mounted."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(render(inbox))

    async def messages(request: Request) -> JSONResponse:
        return JSONResponse({"emails": inbox.items("email"), "webhooks": inbox.items("webhook")})

    async def hook(request: Request) -> Response:
        record = inbox.add_webhook(request.path_params.get("name", "default"),
                                   dict(request.headers), await request.body())
        if record["verified"] is False:
            return JSONResponse({"ok": False, "error": "signature does not match"}, status_code=401)
        return JSONResponse({"ok": True})

    return Starlette(routes=[
        Route("/", page), Route("/messages.json", messages),
        Route("/hooks", hook, methods=["POST"]), Route("/hooks/{name}", hook, methods=["POST"]),
    ])


def serve(inbox: Inbox, host: str = "127.0.0.1", port: int = 8025, smtp_port: int = 2525) -> None:
    """Run the SMTP catcher and the web app until interrupted."""
    import uvicorn

    controller = start_smtp(inbox, host, smtp_port)
    try:
        uvicorn.run(create_app(inbox), host=host, port=port, log_level="warning",
                    access_log=False, lifespan="off")
    finally:
        controller.stop()


# --- the page --------------------------------------------------------------------------------

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;width:100%;margin-bottom:2em}td,th{border:1px solid #ccc;
padding:.4em;vertical-align:top;text-align:left}pre{white-space:pre-wrap;margin:0;font-size:.85em}
.ok{color:#080;font-weight:bold}.bad{color:#b00;font-weight:bold}.muted{color:#777}"""


def _mark(verified: bool | None) -> str:
    if verified is None:
        return '<span class="muted">not checked (no secret configured or no signature)</span>'
    return ('<span class="ok">signature verified ✓</span>' if verified
            else '<span class="bad">signature verified ✗ (does not match)</span>')


def _email_row(item: Record) -> str:
    e = html.escape
    return (f"<tr><td>{e(item['received_at'])}</td><td>{e(', '.join(item['to']))}</td>"
            f"<td>{e(item['subject'])}</td><td><pre>{e(item['body'])}</pre></td></tr>")


def _webhook_row(item: Record) -> str:
    e = html.escape
    payload = json.dumps(item["payload"], ensure_ascii=False, indent=2)
    dup = ' <span class="muted">(duplicate event id)</span>' if item.get("duplicate") else ""
    return (f"<tr><td>{e(item['received_at'])}</td><td>{e(str(item['event']))}{dup}<br>"
            f"<span class=muted>{e(str(item['event_id']))}</span></td><td>{_mark(item['verified'])}</td>"
            f"<td><pre>{e(payload)}</pre></td></tr>")


def render(inbox: Inbox) -> str:
    """The page: newest first, e-mails then webhooks; reloads itself every 5 seconds."""
    emails = "".join(_email_row(i) for i in reversed(inbox.items("email")))
    hooks = "".join(_webhook_row(i) for i in reversed(inbox.items("webhook")))
    none = '<tr><td colspan=4 class="muted">nothing yet</td></tr>'
    secret = "set" if inbox.webhook_secret else "not set: signatures are not checked"
    return f"""<!doctype html><html lang="ko"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>npay-billing inbox</title><style>{_STYLE}</style></head>
<body><h1>npay-billing inbox</h1>
<p>What the demo merchant and its customers received: e-mails to customers over SMTP, and
signed webhooks to the merchant (HMAC-SHA256 of <code>timestamp.body</code>; webhook secret {secret}).
As JSON: <a href="messages.json">messages.json</a>.</p>
<h2>E-mails ({len(inbox.items("email"))})</h2>
<table><tr><th>received (UTC)</th><th>to</th><th>subject</th><th>body</th></tr>{emails or none}</table>
<h2>Webhooks ({len(inbox.items("webhook"))})</h2>
<table><tr><th>received (UTC)</th><th>event</th><th>signature</th><th>payload</th></tr>{hooks or none}</table>
</body></html>"""
