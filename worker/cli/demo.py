"""``npay-billing demo``: seed subscriptions that bill every 10 seconds against the sandbox.

For each subscription a registration is created through the sandbox's control API
(``POST /_sandbox/registrations``), so the recurrentId is real to the sandbox. Most approve;
``--declining N`` always decline (``NotEnoughAccountBalance``: retried per policy, then the
registration is expired), and one more declines once then recovers. The default merchant gets
a demo policy (retry after 5 s, 3 attempts, then expire) unless ``--keep-policy``. Running it
again adds more subscriptions.

Notifications: ``--webhook-url``/``--webhook-secret`` and ``--email-customers`` give the default
merchant a signed webhook and customer e-mails (``make run`` points them at ``npay-billing
inbox``), so a final failure reaches someone instead of being kept as ``no_channel``. They are
applied even when ``--if-empty`` seeds nothing.

No chain id is involved: the worker sends ``X-NaverPay-Chain-Id`` only when
``NAVERPAY_CHAIN_ID`` (or the merchant's ``chain_id``) is set, and the sandbox accepts calls
with or without it unless it runs with ``--require-chain-id``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import emit_json, table, won
from worker.cli.support import SetupError, current_env, json_option

if TYPE_CHECKING:
    import httpx

DEFAULT_API_BASE = "http://127.0.0.1:8055"
DEMO_CRON = "* * * * * */10"
# The demo bills every 10 seconds, so its merchant allows cycles 5 s apart (default: 1 day).
DEMO_POLICY = {"retry_delays": "5s", "max_attempts": 3, "final_action": "expire", "min_cycle_interval": "5s"}
DECLINE: dict[str, Any] = {"declineCode": "NotEnoughAccountBalance"}
PLANS = [
    ("DEMO-BASIC", "월간 구독 베이직", 9900), ("DEMO-PREMIUM", "프리미엄 멤버십", 14900),
    ("DEMO-COFFEE", "원두 정기배송", 19800), ("DEMO-PET", "반려동물 사료 정기구독", 32000),
    ("DEMO-EBOOK", "전자책 무제한", 5500), ("DEMO-WATER", "생수 정기배송", 12000),
    ("DEMO-CLOUD", "클라우드 저장공간 1TB", 3300), ("DEMO-MEAL", "밀키트 주간 구독", 45000),
]


@dataclass(frozen=True)
class Seed:
    """One demo subscription to create: its plan and its sandbox behaviour."""

    product_code: str
    product_name: str
    amount: int
    behaviour: dict[str, Any]
    role: str  # "approves" | "declines" | "recovers"


def plan_seeds(count: int, declining: int) -> list[Seed]:
    """``count`` seeds: ``declining`` always decline, one recovers (if room), the rest approve."""
    declining = min(declining, count)
    recovering = 1 if count > declining and declining > 0 else 0
    seeds = []
    for index in range(count):
        code, name, amount = PLANS[index % len(PLANS)]
        if index < declining:
            behaviour, role = dict(DECLINE), "declines"
        elif index < declining + recovering:
            behaviour, role = {**DECLINE, "declineTimes": 1}, "recovers"
        else:
            behaviour, role = {}, "approves"
        seeds.append(Seed(code, name, amount, behaviour, role))
    return seeds


def api_base() -> str:
    """``NAVERPAY_API_BASE``, as the worker reads it."""
    return (os.environ.get("NAVERPAY_API_BASE") or DEFAULT_API_BASE).rstrip("/")


def _check_sandbox(client: httpx.Client, base: str) -> None:
    import httpx

    try:
        answer = client.get(f"{base}/_sandbox/health")
    except httpx.HTTPError as exc:
        raise SetupError(f"the sandbox at {base} is not reachable ({exc}); start it with "
                         "`npay-billing sandbox` (or point NAVERPAY_API_BASE at it)") from None
    if answer.status_code != 200:
        raise SetupError(f"{base} is not the sandbox (GET /_sandbox/health answered "
                         f"{answer.status_code}); the demo only runs against `npay-billing sandbox`")


def _register(client: httpx.Client, base: str, user: str, seed: Seed) -> str:
    answer = client.post(f"{base}/_sandbox/registrations", json={
        "merchantUserId": user, "productCode": seed.product_code,
        "productName": seed.product_name, "behaviour": seed.behaviour})
    if answer.status_code != 200:
        raise SetupError(f"the sandbox refused a registration: {answer.text}")
    return str(answer.json()["recurrentId"])


def notification_settings(webhook_url: str | None, webhook_secret: str | None,
                          email_customers: bool) -> dict[str, Any]:
    """The merchant columns for the demo's notification channels (only those asked for)."""
    values: dict[str, Any] = {}
    if webhook_url:
        values.update(webhook_url=webhook_url, webhook_secret=webhook_secret or None)
    if email_customers:
        values["notify_email"] = 1
    return values


def _configure(channels: dict[str, Any]) -> None:
    from sqlalchemy import update

    from models import Merchant

    if channels:
        with current_env().sessions().begin() as session:
            session.execute(update(Merchant).where(Merchant.id == 1).values(**channels))


def _describe(channels: dict[str, Any]) -> str:
    parts = []
    if channels.get("webhook_url"):
        signed = "signed" if channels.get("webhook_secret") else "unsigned"
        parts.append(f"{signed} webhook to {channels['webhook_url']}")
    if channels.get("notify_email"):
        parts.append("e-mail to the customer (SMTP_HOST:SMTP_PORT)")
    return ", ".join(parts)


def _insert(rows: list[dict[str, Any]], keep_policy: bool) -> list[int]:
    from sqlalchemy import insert, update

    from models import Merchant, Subscription

    with current_env().sessions().begin() as session:
        if session.get(Merchant, 1) is None:
            raise SetupError("the default merchant (id 1) is missing; run `npay-billing db upgrade`")
        if not keep_policy:
            session.execute(update(Merchant).where(Merchant.id == 1).values(**DEMO_POLICY))
        return [session.execute(insert(Subscription).values(**row).returning(Subscription.id))
                .scalar_one() for row in rows]


@click.command()
@click.option("--count", type=click.IntRange(min=1, max=1000), default=5, show_default=True,
              help="Subscriptions to create.")
@click.option("--declining", type=click.IntRange(min=0), default=1, show_default=True,
              help="How many always decline (one more then declines once and recovers).")
@click.option("--keep-policy", is_flag=True,
              help="Leave the default merchant's retry policy as it is.")
@click.option("--if-empty", is_flag=True,
              help="Do nothing when the database already has subscriptions (what `make run` uses).")
@click.option("--webhook-url", envvar="NPAY_DEMO_WEBHOOK_URL", show_envvar=True, metavar="URL",
              help="Give the default merchant this webhook (e.g. `npay-billing inbox`'s "
                   "http://127.0.0.1:8025/hooks/demo).")
@click.option("--webhook-secret", envvar="NPAY_DEMO_WEBHOOK_SECRET", show_envvar=True, metavar="SECRET",
              help="The webhook's signing secret (give the inbox the same one).")
@click.option("--email-customers", is_flag=True, envvar="NPAY_DEMO_EMAIL", show_envvar=True,
              help="E-mail customers (notify_email = 1) through SMTP_HOST:SMTP_PORT.")
@json_option
def demo(count: int, declining: int, keep_policy: bool, if_empty: bool, webhook_url: str | None,
         webhook_secret: str | None, email_customers: bool, as_json: bool) -> None:
    """Seed demo subscriptions billed every 10 s against the sandbox (NAVERPAY_API_BASE).

    Start the sandbox first (`npay-billing sandbox`), then a worker and beat, and follow the
    progress with `npay-billing watch`. With --webhook-url / --email-customers, final
    failures are sent there (`npay-billing inbox` shows what arrived).
    """
    import httpx

    sessions = current_env().sessions()  # not migrated: say so before touching the sandbox
    channels = notification_settings(webhook_url, webhook_secret, email_customers)
    _configure(channels)
    if channels and not as_json:
        click.echo(f"default merchant notifies final failures: {_describe(channels)}")
    if if_empty and _has_subscriptions(sessions):
        click.echo("demo: the database already has subscriptions; not seeding more")
        return
    base, batch = api_base(), secrets.token_hex(3)
    seeds = plan_seeds(count, declining)
    with httpx.Client(timeout=5) as client:
        _check_sandbox(client, base)
        rows = []
        for index, seed in enumerate(seeds, start=1):
            user = f"demo-{batch}-{index}"
            rows.append({"recurrent_id": _register(client, base, user, seed), "merchant_user_id": user,
                         "product_code": seed.product_code, "product_name": seed.product_name,
                         "amount": seed.amount, "cron": DEMO_CRON,
                         "customer_email": f"{user}@example.com"})
    ids = _insert(rows, keep_policy)
    _report(ids, rows, seeds, keep_policy, as_json)


def _has_subscriptions(sessions: Any) -> bool:
    from sqlalchemy import select

    from models import Subscription

    with sessions() as session:
        return session.scalar(select(Subscription.id).limit(1)) is not None


def _report(ids: list[int], rows: list[dict[str, Any]], seeds: list[Seed], keep_policy: bool,
            as_json: bool) -> None:
    if as_json:
        emit_json({"policy": None if keep_policy else DEMO_POLICY, "subscriptions": [
            {"id": i, "recurrent_id": r["recurrent_id"], "product_name": r["product_name"],
             "amount": r["amount"], "cron": r["cron"], "behaviour": s.role}
            for i, r, s in zip(ids, rows, seeds, strict=True)]})
        return
    click.echo(table(["ID", "RECURRENT ID", "PRODUCT", "AMOUNT", "SANDBOX"],
                     [[i, r["recurrent_id"], r["product_name"], won(r["amount"]), s.role]
                      for i, r, s in zip(ids, rows, seeds, strict=True)], right=["ID", "AMOUNT"]))
    if not keep_policy:
        click.echo("default merchant policy: retry after 5s, 3 attempts, then expire the registration")
    click.echo(f"billed every 10 s ({DEMO_CRON!r}); run a worker and beat "
               "(`make run`), then follow it with `npay-billing watch`")
