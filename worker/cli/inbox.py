"""``npay-billing inbox``: a local mail catcher and webhook receiver, shown on a page."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (both).")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(1, 65535),
              help="HTTP port: the page, /messages.json and the webhook receiver /hooks/NAME.")
@click.option("--smtp-port", default=2525, show_default=True, type=click.IntRange(1, 65535),
              help="SMTP port of the mail catcher (point the worker's SMTP_PORT here).")
@click.option("--webhook-secret", envvar="INBOX_WEBHOOK_SECRET", show_envvar=True, metavar="SECRET",
              help="Secret to verify X-Npay-Billing-Signature with (the merchant's webhook_secret). "
                   "Without it signatures are shown as not checked.")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Keep what arrives in this JSON-lines file (read back on start); default: memory.")
def inbox(host: str, port: int, smtp_port: int, webhook_secret: str | None, store: Path | None) -> None:
    """Catch the e-mails and webhooks npay-billing sends, and show them on a page.

    A stand-in for the customers' mailboxes and the merchant's webhook endpoint (`make run`
    starts it and gives the demo merchant both): SMTP on --smtp-port, webhooks POSTed to
    http://HOST:PORT/hooks/NAME (signatures checked with --webhook-secret), and the page at
    http://HOST:PORT/ with the decoded Korean e-mails and each webhook's verified signature.
    """
    from worker.inbox import Inbox, serve

    box = Inbox(path=store, webhook_secret=webhook_secret or None)
    click.echo(f"inbox on http://{host}:{port}/ (webhooks: /hooks/NAME), SMTP on {host}:{smtp_port}"
               " (Ctrl-C to stop)", err=True)
    try:
        serve(box, host, port, smtp_port)
    except KeyboardInterrupt:
        pass
