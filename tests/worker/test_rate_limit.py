"""The global rate limit toward NAVER (``worker.ratelimit``), against the real redis-server.

Pinned here: a granted slot is never closer than ``1 / rate`` to the previous one of its key,
even when two processes draw from the same bucket; a refusal reserves nothing; keys are per
partner (or per merchant) and independent; a refused or unavailable limiter stops a charge
before the NAVER call, without consuming anything, and the charge still ends charged once;
failing open sends the call unlimited. Nothing here is timed: the slots come from Redis's clock
and are compared with each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest

from tests.services import ROOT, free_port
from tests.worker.billing import Sleeps
from tests.worker.test_charging import World
from worker.charging import process_charge
from worker.ratelimit import Limit, RateLimitConfig, RateLimited, RedisRateLimiter

MERCHANT = SimpleNamespace(id=1, partner_id=None)


def config(redis_url: str, **kw: object) -> RateLimitConfig:
    kw.setdefault("default", Limit(50))
    return RateLimitConfig(redis_url=redis_url, prefix=f"test:{uuid.uuid4().hex}:", **kw)  # type: ignore[arg-type]


def test_slots_are_spaced_by_the_rate_and_the_caller_sleeps_until_its_own(redis_service):
    sleeps = Sleeps()
    limiter = RedisRateLimiter(config(redis_service.url, default=Limit(10)), sleep=sleeps)
    grants = [limiter.acquire(MERCHANT) for _ in range(4)]
    assert all(g is not None and g.key == "naverpay-partner" for g in grants)
    slots = [g.slot for g in grants if g]
    assert [round(b - a, 6) >= 0.1 for a, b in zip(slots, slots[1:], strict=False)] == [True] * 3
    # The first call goes at once; each next one waits for its reserved slot (never longer).
    assert grants[0] and grants[0].wait == 0 and sleeps.calls == [g.wait for g in grants[1:] if g]
    assert all(0 < w <= 0.1 * (i + 1) for i, w in enumerate(sleeps.calls))


def test_burst_lets_that_many_calls_through_at_once(redis_service):
    sleeps = Sleeps()
    limiter = RedisRateLimiter(config(redis_service.url, default=Limit(1, burst=3)), sleep=sleeps)
    grants = [limiter.acquire(MERCHANT) for _ in range(4)]
    assert [g.wait == 0 for g in grants if g] == [True, True, True, False]
    assert len(sleeps.calls) == 1


def test_a_refusal_reserves_nothing(redis_service):
    limiter = RedisRateLimiter(config(redis_service.url, default=Limit(1)), sleep=Sleeps())
    first = limiter.acquire(MERCHANT)
    with pytest.raises(RateLimited) as refused:
        limiter.acquire(MERCHANT, max_wait=0.05)
    assert 0.05 < refused.value.retry_after <= 1.0 and refused.value.key == "naverpay-partner"
    # Had the refusal taken a slot, this one would be two seconds after the first.
    again = limiter.acquire(MERCHANT, max_wait=5)
    assert first and again and round(again.slot - first.slot, 6) == 1.0


def test_keys_are_per_partner_or_per_merchant_and_independent(redis_service):
    cfg = config(redis_service.url, default=Limit(1),
                 per_key={"slow-partner": Limit(0.001), "free-partner": None})
    limiter = RedisRateLimiter(cfg, sleep=Sleeps())
    a, b = SimpleNamespace(id=1, partner_id="slow-partner"), SimpleNamespace(id=2, partner_id="other")
    assert limiter.acquire(a) and limiter.acquire(b)  # one bucket each: neither waits on the other
    with pytest.raises(RateLimited):
        limiter.acquire(a, max_wait=1)
    free = SimpleNamespace(id=3, partner_id="free-partner")
    assert [limiter.acquire(free) for _ in range(3)] == [None] * 3  # "off" for that key
    by_merchant = RateLimitConfig(scope="merchant", default=Limit(1))
    assert (by_merchant.key(a), cfg.key(a), cfg.key(MERCHANT)) == ("merchant:1", "slow-partner",
                                                                   "naverpay-partner")


CHILD = """
import json, sys
from worker.ratelimit import Limit, RateLimitConfig, RedisRateLimiter
from types import SimpleNamespace
url, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
limiter = RedisRateLimiter(RateLimitConfig(default=Limit(40), redis_url=url, prefix=prefix))
m = SimpleNamespace(id=1, partner_id="shared")
print(json.dumps([limiter.acquire(m).slot for _ in range(n)]))
"""


def test_two_processes_share_one_limit(redis_service):
    """Two worker processes draw from one bucket: merged, their slots are 1/rate apart."""
    prefix, n = f"test:{uuid.uuid4().hex}:", 12
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, redis_service.url, prefix, str(n)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    per_process = [json.loads(out) for out in outputs]
    slots = sorted(s for slots in per_process for s in slots)
    assert len(slots) == 2 * n and all(len(s) == n for s in per_process)
    gaps = [round(b - a, 6) for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= 0.025, gaps  # 40 calls per second: never two within 25 ms


def test_settings_from_the_environment():
    env = {"NAVERPAY_RATE_LIMIT": "20", "NAVERPAY_RATE_LIMITS": "a=5, b=off",
           "NAVERPAY_RATE_LIMIT_BURST": "2", "CELERY_BROKER_URL": "redis://broker:6379/1",
           "NAVERPAY_PARTNER_ID": "ours"}
    cfg = RateLimitConfig.from_env(env)
    assert (cfg.default, cfg.per_key, cfg.redis_url, cfg.default_partner, cfg.fail_open) == (
        Limit(20, 2), {"a": Limit(5, 2), "b": None}, "redis://broker:6379/1", "ours", False)
    assert not RateLimitConfig.from_env({}).enabled  # off by default
    for bad, named in [({"NAVERPAY_RATE_LIMIT": "fast"}, "NAVERPAY_RATE_LIMIT"),
                       ({"NAVERPAY_RATE_LIMIT": "-3"}, "NAVERPAY_RATE_LIMIT"),
                       ({"NAVERPAY_RATE_LIMITS": "a5"}, "NAVERPAY_RATE_LIMITS"),
                       ({"NAVERPAY_RATE_LIMIT_BURST": "0"}, "NAVERPAY_RATE_LIMIT_BURST"),
                       ({"NAVERPAY_RATE_LIMIT_SCOPE": "shop"}, "NAVERPAY_RATE_LIMIT_SCOPE"),
                       ({"NAVERPAY_RATE_LIMIT_ON_REDIS_ERROR": "maybe"}, "ON_REDIS_ERROR")]:
        with pytest.raises(ValueError, match=named):
            RateLimitConfig.from_env(bad)


# --- the charge path --------------------------------------------------------------------------

@pytest.fixture
def world(sqlite_db, sandbox_url):
    w = World(sqlite_db, sandbox_url)
    yield w
    w.client.close()


def with_limiter(world: World, limiter: RedisRateLimiter) -> None:
    from dataclasses import replace
    world.engine = replace(world.engine, limiter=limiter)


def test_a_charge_takes_a_slot_before_each_naver_call(world, redis_service):
    rid = world.subscribe()
    charge_id = world.due_charge()
    with_limiter(world, RedisRateLimiter(config(redis_service.url, default=Limit(1)), sleep=world.sleeps))
    out = process_charge(world.engine, charge_id, "test")
    assert out.status == "succeeded" and len(world.sandbox.approved(rid)) == 1
    # The reservation went at once; the approval waited for the next slot, about a second on.
    assert len(world.sleeps.calls) == 1 and 0.5 < world.sleeps.calls[0] <= 1.0


def test_a_slot_too_far_away_stops_the_run_before_the_call_and_the_charge_ends_once(world, redis_service):
    rid = world.subscribe()
    charge_id = world.due_charge()
    slow = config(redis_service.url, default=Limit(1 / 60), max_wait=5)
    with_limiter(world, RedisRateLimiter(slow, sleep=world.sleeps))
    out = process_charge(world.engine, charge_id, "test")
    # Reserved, then the approval's slot is a minute away: stopped before sending it.
    assert out.status == "approving" and world.sleeps.calls == []
    assert world.attempts(charge_id) == [("reserve", "ok", "Success")]
    assert world.sandbox.approved(rid) == []
    lease_until = world.charge(charge_id).lease_until
    assert lease_until is not None and lease_until > world.clock()  # the walk brings it back then
    # Later (no limit now): history first, then the approval with the same key; one payment.
    with_limiter(world, RedisRateLimiter(config(redis_service.url, default=None), sleep=world.sleeps))
    world.clock.advance(seconds=90)
    assert process_charge(world.engine, charge_id, "later").status == "succeeded"
    assert len(world.sandbox.approved(rid)) == 1


def test_a_cancel_during_the_wait_for_a_slot_wins_over_the_approval(world, redis_service):
    rid = world.subscribe()
    charge_id = world.due_charge()

    def cancel_while_waiting(seconds: float) -> None:
        world.sleeps(seconds)
        world.db.sql("UPDATE subscriptions SET status = 'canceled'")

    limiter = RedisRateLimiter(config(redis_service.url, default=Limit(1)), sleep=cancel_while_waiting)
    with_limiter(world, limiter)
    out = process_charge(world.engine, charge_id, "test")
    # Reserved at once; the approval waited for its slot, saw the cancel, and was never sent;
    # history (after its own wait) shows no approval, so the charge is canceled.
    assert world.sandbox.approved(rid) == []
    assert [kind for kind, _, _ in world.attempts(charge_id)] == ["reserve", "history"]
    assert out.status == "canceled" and len(world.sleeps.calls) == 2


def unreachable() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_redis_unavailable_fails_closed_by_default(world):
    rid = world.subscribe()
    charge_id = world.due_charge()
    limiter = RedisRateLimiter(config(unreachable()), sleep=world.sleeps)
    with pytest.raises(RateLimited, match="Redis unavailable"):
        limiter.acquire(MERCHANT)
    with_limiter(world, limiter)
    out = process_charge(world.engine, charge_id, "test")
    # Nothing was sent: no attempt row, no reservation at NAVER; the charge comes back later.
    assert out.status == "reserving" and world.attempts(charge_id) == []
    assert world.sandbox.approved(rid) == [] and out.calls == 0
    assert world.charge(charge_id).attempt_count == 1  # the key of the resend is the same


def test_redis_unavailable_fails_open_when_configured(world, caplog):
    rid = world.subscribe()
    charge_id = world.due_charge()
    with_limiter(world, RedisRateLimiter(config(unreachable(), fail_open=True), sleep=world.sleeps))
    out = process_charge(world.engine, charge_id, "test")
    assert out.status == "succeeded" and len(world.sandbox.approved(rid)) == 1
    assert "failing open" in caplog.text

