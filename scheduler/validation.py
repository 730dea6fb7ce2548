"""Checks on rows users inserted by hand: a bad row gets a clear ``last_error``, never a crash.

``problems(subscription)`` lists everything wrong with a subscription row (including its
merchant's policy) in words an operator can act on. An empty list means the row is billable:
its cron fires, its cycles are no closer than the merchant's ``min_cycle_interval``, and what
the charge would send fits NAVER Pay's input limits, so NAVER is never called with a request
it must refuse (a refusal would hold the charge; see worker/charging.py).
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache

from models import Merchant, Subscription
from scheduler.cycles import CycleError, parse_zone, schedule_problem, validate_cron
from scheduler.policy import DEFAULT_MIN_CYCLE_INTERVAL, PolicyError, RetryPolicy, parse_interval

REQUIRED_TEXT = ("recurrent_id", "merchant_user_id", "product_code", "product_name")

# NAVER Pay's input limits, checked before any call (docs/naverpay-api.md §1.7, §3.5).
# NAVER's minimum payment is 100 won in its documentation (some integrations use 10: we keep
# the stricter one). Text limits are not published: these are the schema's widths (SQLite does
# not enforce them) and, for the product name shown to the customer, a conservative 128.
MIN_AMOUNT = 100
MAX_LENGTH = {"recurrent_id": 64, "merchant_user_id": 100, "product_name": 128}


def merchant_problems(merchant: Merchant) -> list[str]:
    """What is wrong with a merchant's policy columns."""
    found = _policy_problems(merchant.retry_delays, merchant.max_attempts, merchant.retryable_codes,
                             merchant.min_cycle_interval)
    return [f"merchant {merchant.id} ({merchant.name}): {problem}" for problem in found]


@lru_cache(maxsize=1024)
def _policy_problems(retry_delays: str | None, max_attempts: int | None, retryable_codes: str | None,
                     min_cycle_interval: str | None) -> tuple[str, ...]:
    """Pure in the columns, and asked for every due row: parsed once per distinct policy."""
    found: list[str] = []
    try:
        RetryPolicy.from_columns(retry_delays, max_attempts, retryable_codes)
    except PolicyError as exc:
        found.append(str(exc))
    try:
        parse_interval(min_cycle_interval or DEFAULT_MIN_CYCLE_INTERVAL)
    except PolicyError as exc:
        found.append(str(exc))
    return tuple(found)


def limit_problems(subscription: Subscription) -> list[str]:
    """What NAVER Pay would refuse in the charge this row makes (empty when nothing)."""
    found: list[str] = []
    for column, limit in MAX_LENGTH.items():
        value = getattr(subscription, column)
        if value is not None and len(str(value)) > limit:
            found.append(f"{column} is {len(str(value))} characters; NAVER Pay takes at most {limit}")
    amount, tax_free = subscription.amount, subscription.tax_free_amount
    if amount is None or amount < MIN_AMOUNT:
        found.append(f"amount must be at least {MIN_AMOUNT} won (NAVER Pay's minimum), got {amount!r}")
    elif tax_free is None or not 0 <= tax_free <= amount:
        found.append(f"tax_free_amount must be between 0 and amount ({amount}), got {tax_free!r}")
    return found


def schedule_problems(subscription: Subscription) -> list[str]:
    """What is wrong with the row's cron and zone, under its merchant's min_cycle_interval."""
    found: list[str] = []
    try:
        cron = validate_cron(subscription.cron)
    except CycleError as exc:
        found.append(str(exc))
        cron = None
    try:
        parse_zone(subscription.timezone)
    except CycleError as exc:
        found.append(str(exc))
    if cron is not None and subscription.merchant is not None:  # else: its interval is unknown
        problem = schedule_problem(cron, min_interval(subscription.merchant))
        if problem:
            found.append(problem)
    return found


def min_interval(merchant: Merchant) -> timedelta:
    """The merchant's ``min_cycle_interval`` (the default while its own is unreadable)."""
    try:
        return parse_interval(merchant.min_cycle_interval or DEFAULT_MIN_CYCLE_INTERVAL)
    except PolicyError:  # reported by merchant_problems; meanwhile check against the default
        return parse_interval(DEFAULT_MIN_CYCLE_INTERVAL)


def problems(subscription: Subscription) -> list[str]:
    """Every reason this subscription row cannot be billed (empty when it can)."""
    found: list[str] = []
    for column in REQUIRED_TEXT:
        value = getattr(subscription, column)
        if value is None or not str(value).strip():
            found.append(f"{column} is empty")
    found.extend(limit_problems(subscription))
    found.extend(_shared_problems(subscription))
    return found


def _shared_problems(subscription: Subscription) -> tuple[str, ...]:
    """The checks that read only the row's cron, zone and merchant_id and its merchant's
    policy columns: every row alike (a month-start spike: all of them) shares one answer,
    computed once (a bounded cache keyed by those values and their types, so 1 and 1.0 or
    True are not mistaken for each other)."""
    merchant = subscription.merchant
    values = (subscription.cron, subscription.timezone, subscription.merchant_id) if merchant is None else (
        subscription.cron, subscription.timezone, subscription.merchant_id, merchant.id, merchant.name,
        merchant.retry_delays, merchant.max_attempts, merchant.retryable_codes, merchant.min_cycle_interval)
    key = (values, tuple(map(type, values)))
    try:
        return _SHARED[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value (a row built by hand): the same checks, uncached
        return _shared_uncached(subscription)
    found = _shared_uncached(subscription)
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    _SHARED[key] = found
    return found


_SHARED: dict[object, tuple[str, ...]] = {}
_SHARED_MAX = 1024


def _shared_uncached(subscription: Subscription) -> tuple[str, ...]:
    found = schedule_problems(subscription)
    if subscription.merchant is None:
        found.append(f"unknown merchant_id {subscription.merchant_id!r}: no such row in merchants")
    else:
        found.extend(merchant_problems(subscription.merchant))
    return tuple(found)
