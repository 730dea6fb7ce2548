"""A global rate limit toward NAVER Pay: one token bucket per NAVER partner (or per merchant)
in Redis, shared by every worker process on every machine. Off unless configured.

Why: a month-start spike must not send NAVER more calls per second than the merchant agreed
with NAVER, however many workers drain it.

Data flow (one NAVER call of a charge run)::

    transition committed --> limiter.acquire(merchant, max_wait)
        --> Redis: the Lua script below, run atomically, on Redis's own clock (one clock for
            all machines):
              slot = max(now, tat) - (burst - 1) / rate     # tat: the bucket's state
              slot - now <= max_wait: tat = max(now, tat) + 1 / rate; grant (wait, slot)
              otherwise:              nothing stored; refuse (wait)
        --> granted: sleep(wait) (injectable), then the NAVER call
        --> refused: RateLimited(retry_after); the run stops before the call and the charge
            comes back after ``retry_after`` (a reserving charge resends its reservation with
            the same key, an approving one asks history first: nothing is ever sent twice)

The bucket is a GCRA ("generic cell rate algorithm"), i.e. a token bucket of ``burst`` tokens
refilled at ``rate`` per second, stored as one number per key ("theoretical arrival time",
microseconds, expiring when idle). A grant reserves its slot, so a caller that waits is never
overtaken; a refusal reserves nothing. With ``burst = 1`` two granted slots of one key are
never closer than ``1 / rate`` seconds (tests check this across two processes).

Settings (environment; the merchant row gives the key: its ``partner_id``, or the
environment's ``NAVERPAY_PARTNER_ID`` when NULL, or its id with scope ``merchant``):

=====================================  ==========================================  ========
variable                               meaning                                     default
=====================================  ==========================================  ========
``NAVERPAY_RATE_LIMIT``                NAVER calls per second per key              off
``NAVERPAY_RATE_LIMITS``               per key: ``partner-a=20,merchant:3=5,x=off`` none
``NAVERPAY_RATE_LIMIT_BURST``          calls allowed at once after an idle spell    1
``NAVERPAY_RATE_LIMIT_SCOPE``          ``partner`` or ``merchant``                  partner
``NAVERPAY_RATE_LIMIT_MAX_WAIT``       longest wait in a run before it stops (s)    10
``NAVERPAY_RATE_LIMIT_ON_REDIS_ERROR`` ``closed`` (stop, retry later) or ``open``   closed
``NAVERPAY_RATE_LIMIT_REDIS_URL``      the Redis holding the buckets                the broker
=====================================  ==========================================  ========

Redis unavailable: **fail closed** by default. The limit exists because NAVER may throttle or
block a merchant that exceeds what it agreed; a charge that waits costs nothing (no attempt is
consumed, the customer hears nothing, the charge comes back after ``retry_after``), and the
broker is the same Redis in the default setup, so little work runs anyway. ``open`` sends the
call unlimited (logged once per failure) for a deployment whose buckets live in a separate,
less available Redis and that prefers throughput to the agreement.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

log = logging.getLogger(__name__)

# KEYS[1]: the bucket. ARGV: interval (us), tolerance (us) = (burst - 1) * interval, max wait (us).
# Returns {granted (1|0), wait (us), slot (us since the epoch, Redis's clock)}.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local slot = tat - tolerance
if slot < now then slot = now end
local wait = slot - now
if wait > max_wait then
  return {0, wait, slot}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
return {1, wait, slot}
"""


class RateLimited(Exception):
    """No NAVER call now: the bucket's next slot is too far away, or (fail closed) Redis did
    not answer. ``retry_after`` seconds from now the charge may try again."""

    def __init__(self, key: str, retry_after: float, reason: str) -> None:
        super().__init__(f"rate limit {key}: {reason}; retry after {retry_after:.2f}s")
        self.key, self.retry_after, self.reason = key, retry_after, reason


class MerchantKey(Protocol):
    """What the limiter reads of a merchant row."""

    @property
    def id(self) -> int: ...
    @property
    def partner_id(self) -> str | None: ...


@dataclass(frozen=True)
class Limit:
    """Calls per second and burst of one key."""

    rate: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate limit {self.rate!r}: calls per second must be positive")
        if self.burst < 1:
            raise ValueError(f"rate limit burst {self.burst!r} must be at least 1")


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class RateLimitConfig:
    """The limits, read from the environment (see the module docstring)."""

    default: Limit | None = None
    per_key: Mapping[str, Limit | None] = field(default_factory=dict)  # None: off for that key
    scope: str = "partner"
    max_wait: float = 10.0
    fail_open: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    default_partner: str = "naverpay-partner"
    prefix: str = "npay:ratelimit:"

    @property
    def enabled(self) -> bool:
        return self.default is not None or any(v is not None for v in self.per_key.values())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RateLimitConfig:
        """Read ``NAVERPAY_RATE_LIMIT*``; a bad value is an error naming the variable."""
        burst_raw = environ.get("NAVERPAY_RATE_LIMIT_BURST", "").strip() or "1"
        if not burst_raw.isdigit() or int(burst_raw) < 1:
            raise ValueError(f"NAVERPAY_RATE_LIMIT_BURST={burst_raw!r} must be a whole number >= 1")
        burst = int(burst_raw)

        def limit(name: str, raw: str) -> Limit | None:
            raw = raw.strip()
            if raw.lower() in ("", "off", "0", "none"):
                return None
            try:
                return Limit(float(raw), burst)
            except ValueError:
                raise ValueError(f"{name}: {raw!r} is not a positive number of calls per second "
                                 "(or 'off')") from None

        default = limit("NAVERPAY_RATE_LIMIT", environ.get("NAVERPAY_RATE_LIMIT", ""))
        per_key: dict[str, Limit | None] = {}
        for item in environ.get("NAVERPAY_RATE_LIMITS", "").split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"NAVERPAY_RATE_LIMITS: {item.strip()!r} is not key=calls-per-second")
            per_key[key.strip()] = limit(f"NAVERPAY_RATE_LIMITS[{key.strip()}]", value)
        scope = environ.get("NAVERPAY_RATE_LIMIT_SCOPE", "").strip() or "partner"
        if scope not in ("partner", "merchant"):
            raise ValueError(f"NAVERPAY_RATE_LIMIT_SCOPE={scope!r} must be 'partner' or 'merchant'")
        on_error = environ.get("NAVERPAY_RATE_LIMIT_ON_REDIS_ERROR", "").strip() or "closed"
        if on_error not in ("open", "closed"):
            raise ValueError(f"NAVERPAY_RATE_LIMIT_ON_REDIS_ERROR={on_error!r} must be 'open' or 'closed'")
        return cls(default=default, per_key=per_key, scope=scope,
                   max_wait=_positive(environ, "NAVERPAY_RATE_LIMIT_MAX_WAIT", 10.0),
                   fail_open=on_error == "open",
                   redis_url=(environ.get("NAVERPAY_RATE_LIMIT_REDIS_URL")
                              or environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"),
                   default_partner=environ.get("NAVERPAY_PARTNER_ID") or "naverpay-partner")

    def key(self, merchant: MerchantKey) -> str:
        """The bucket a merchant's calls draw from."""
        if self.scope == "merchant":
            return f"merchant:{merchant.id}"
        return merchant.partner_id or self.default_partner

    def limit_for(self, key: str) -> Limit | None:
        return self.per_key[key] if key in self.per_key else self.default


@dataclass(frozen=True)
class Grant:
    """A granted call: how long the caller waited, and its slot on Redis's clock (seconds)."""

    key: str
    wait: float
    slot: float


class RedisRateLimiter:
    """The limiter of a worker process (thread-safe: redis-py's pool; one script load)."""

    def __init__(self, config: RateLimitConfig, client: Any | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config, self.sleep = config, sleep
        self.client = client if client is not None else redis.Redis.from_url(
            config.redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self.client.register_script(GCRA)

    def acquire(self, merchant: MerchantKey, max_wait: float | None = None) -> Grant | None:
        """Wait for this merchant's next slot and return it (None: no limit for its key).
        Raises :class:`RateLimited` when the slot is more than ``max_wait`` away (capped by the
        configured maximum), or when Redis fails and the limiter fails closed."""
        config = self.config
        key = config.key(merchant)
        limit = config.limit_for(key)
        if limit is None:
            return None
        bound = config.max_wait if max_wait is None else max(0.0, min(max_wait, config.max_wait))
        interval = 1_000_000 / limit.rate
        try:
            granted, wait_us, slot_us = self._script(
                keys=[config.prefix + key],
                args=[int(round(interval)), int(round(interval * (limit.burst - 1))), int(bound * 1_000_000)])
        except redis.RedisError as exc:
            if config.fail_open:
                log.warning("rate limit %s: Redis failed (%s); failing open, the call goes unlimited",
                            key, exc)
                return None
            log.warning("rate limit %s: Redis failed (%s); failing closed, the call waits", key, exc)
            raise RateLimited(key, max(1.0, config.max_wait), f"Redis unavailable ({exc})") from exc
        wait = int(wait_us) / 1_000_000
        if not int(granted):
            raise RateLimited(key, wait, f"next slot in {wait:.2f}s, more than {bound:.2f}s away")
        if wait > 0:
            self.sleep(wait)
        return Grant(key, wait, int(slot_us) / 1_000_000)


def limiter_from_env(environ: Mapping[str, str] = os.environ,
                     sleep: Callable[[float], None] = time.sleep) -> RedisRateLimiter | None:
    """The process's limiter, or None when no limit is configured (the default)."""
    config = RateLimitConfig.from_env(environ)
    return RedisRateLimiter(config, sleep=sleep) if config.enabled else None
