"""Checks on rows users inserted by hand: a bad row gets a clear ``last_error``, never a crash.

``problems(subscription)`` lists everything wrong with a subscription row (including its
merchant's policy) in words an operator can act on. An empty list means the row is billable.
"""

from __future__ import annotations

from models import Merchant, Subscription
from scheduler.cycles import CycleError, parse_zone, validate_cron
from scheduler.policy import PolicyError, RetryPolicy

REQUIRED_TEXT = ("recurrent_id", "merchant_user_id", "product_code", "product_name")


def merchant_problems(merchant: Merchant) -> list[str]:
    """What is wrong with a merchant's policy columns."""
    try:
        RetryPolicy.from_columns(merchant.retry_delays, merchant.max_attempts,
                                 merchant.retryable_codes)
    except PolicyError as exc:
        return [f"merchant {merchant.id} ({merchant.name}): {exc}"]
    return []


def problems(subscription: Subscription) -> list[str]:
    """Every reason this subscription row cannot be billed (empty when it can)."""
    found: list[str] = []
    for column in REQUIRED_TEXT:
        value = getattr(subscription, column)
        if value is None or not str(value).strip():
            found.append(f"{column} is empty")
    amount, tax_free = subscription.amount, subscription.tax_free_amount
    if amount is None or amount <= 0:
        found.append(f"amount must be a positive number of won, got {amount!r}")
    elif tax_free is None or not 0 <= tax_free <= amount:
        found.append(f"tax_free_amount must be between 0 and amount ({amount}), got {tax_free!r}")
    try:
        validate_cron(subscription.cron)
    except CycleError as exc:
        found.append(str(exc))
    try:
        parse_zone(subscription.timezone)
    except CycleError as exc:
        found.append(str(exc))
    if subscription.merchant is None:
        found.append(
            f"unknown merchant_id {subscription.merchant_id!r}: no such row in merchants"
        )
    else:
        found.extend(merchant_problems(subscription.merchant))
    return found
