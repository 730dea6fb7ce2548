"""The world a property example runs in: an SQLite file, a hand-moved clock, the scripted NAVER,
the project's own walk and charge engine, and the invariants checked after every step.

A :class:`Scenario` is plain data (hypothesis draws it; a regression test writes one by hand):
subscriptions, the merchant's policy, NAVER's scripts per API, a list of steps (walks at
advancing times, deliveries and duplicate deliveries of the charge messages the walk enqueued,
lost messages, SQL pauses, cancels, resumes, cron and amount changes, broken and fixed
credentials) and events fired inside a run at its n-th sleep (a cancel or pause between two
tries of one call, or the worker dying there). :func:`run_scenario` plays it, then heals NAVER
and keeps walking and delivering with time advancing, and returns the invariant violations.

Invariants (each violation is a string starting with its letter):

(a) at most one approved payment per (subscription, cycle) at NAVER;
(b) no approval request reaches NAVER while the subscription is not active (as committed in
    the database when the request arrives);
(c) after NAVER healed and enough walks and runs: every charge is final or surfaced to a human
    (``surfaced_at``), no subscription is left ``revoking``;
(d) no final action (expire, ``revoking``/``revoked``, a final-action pause), no customer
    notification (``charge.final_failure``, ``charge.attempt_failed``) and no consumed attempt
    comes from anything but NAVER declining the customer's means for that attempt;
(e) the walk never raises (and a charge run or an expire task never raises either);
(f) the amount NAVER approved equals the charge's amount, which is the subscription's amount
    when the walk created it (or, should the walk wait for consent to a raise, an earlier and
    lower one; never more than the subscription says);
(g) NAVER's ledger and ours agree: money NAVER took is never on a charge we call canceled,
    failed or skipped, and at the end every approval is a succeeded charge with that
    paymentId and every succeeded charge has its approval at NAVER.
"""

from __future__ import annotations

import itertools
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import FINAL_CHARGE_STATUSES, Charge, make_engine, make_session_factory
from scheduler.walk import WalkConfig, walk
from tests import services
from tests.property.fake_naver import (
    APPROVAL_TIMEOUT,
    BASE,
    CHAIN_ID,
    CLIENT_ID,
    GOOD_SECRET,
    LATE_BOUND,
    PARTNER,
    READ_TIMEOUT,
    Crash,
    FakeNaver,
)
from worker.charging import ChargeEngine, process_charge
from worker.finalize import expire_registration
from worker.naverpay.client import NaverPayClient
from worker.naverpay.config import NaverPayConfig

T0 = datetime(2026, 11, 28, 2, 59, 50, tzinfo=UTC)  # 10 s before every cron's first cycle
LEASE = timedelta(seconds=60)
# 36 minutes of simulated time with NAVER healthy and workers delivering, longer than any
# backoff of the engine with this lease (held: 10 leases; stalled: 5 leases; retries: 1 min)
HEAL_ROUNDS = (60, 60, 120, 120, 300, 300, 600, 600)
FINAL = {str(s) for s in FINAL_CHARGE_STATUSES}

Step = tuple[Any, ...]


@dataclass(frozen=True)
class SubSpec:
    cron: str
    amount: int


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    retry_delays: str = "30s,1m"
    final_action: str = "expire"
    missed_cycles: str = "latest"


@dataclass(frozen=True)
class Scenario:
    subs: tuple[SubSpec, ...]
    policy: Policy = Policy()
    reserve: tuple[str, ...] = ()
    approve: tuple[str, ...] = ()
    history: tuple[str, ...] = ()
    expire: tuple[str, ...] = ()
    steps: tuple[Step, ...] = ()
    # (where, n, action): at the n-th sleep of the example ("any") or the n-th sleep right after
    # a failed try of that API ("reserve", "approve", "history", "expire"), do action
    # ("cancel", "pause": by SQL; "crash": the worker dies there)
    sleep_events: tuple[tuple[str, int, str], ...] = ()
    seed: int = 0


# --- the database ---------------------------------------------------------------------------

class _Database:
    """One engine for the whole process, on a file each example replaces with a fresh copy of a
    migrated template: SQLAlchemy's compiled-statement cache lives on the engine, and a new
    engine per example would compile every statement of the walk and the engine again."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self.folder = Path(tempfile.mkdtemp(prefix="npay-prop-", dir=shm if shm.is_dir() else None))
        self.template = services.migrated_sqlite_file(self.folder / "template.db")
        self.path = self.folder / "npay.db"
        self.engine = make_engine(f"sqlite:///{self.path}")
        self.sessions = make_session_factory(self.engine)

    def fresh(self) -> tuple[sa.Engine, sessionmaker[Session]]:
        self.engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.template, self.path)
        return self.engine, self.sessions


_DATABASE: _Database | None = None


def database() -> _Database:
    global _DATABASE
    if _DATABASE is None or not _DATABASE.template.exists():
        _DATABASE = _Database()
    return _DATABASE


# --- the world ------------------------------------------------------------------------------

@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


class World:
    """One example's database, clock, NAVER, engine and bookkeeping."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.db, self.sessions = database().fresh()
        self.clock = Clock()
        self.fake = FakeNaver(clock=self.clock, advance=self.advance,
                              subscription_status=self.status_of_registration, on_dup=self._dup,
                              scripts={"reserve": list(scenario.reserve), "approve": list(scenario.approve),
                                       "history": list(scenario.history), "expire": list(scenario.expire)})
        self.transport = httpx.MockTransport(self.fake)
        self.secret = GOOD_SECRET
        self.clients: dict[str, NaverPayClient] = {}
        # The engine's settle window (when it has one) is what NAVER's lateness is bounded by.
        settle = {"settle": LATE_BOUND} if "settle" in {f.name for f in fields(ChargeEngine)} else {}
        self.engine = ChargeEngine(sessions=self.sessions, client_for=self.client_for, clock=self.clock,
                                   sleep=self.sleep, lease=LEASE, rng=random.Random(scenario.seed),
                                   **settle)
        self.walk_config = WalkConfig(lease=LEASE, batch_size=50, missed_grace=timedelta(minutes=30))
        self.queue: list[int] = []
        self.delivered: list[int] = []
        self.expected_amount: dict[int, int] = {}  # charge -> its amount when the walk made it
        self.amount_history: dict[int, set[int]] = {}  # subscription -> every amount it had
        self.amounts: dict[int, int] = {}
        self.sql_status: dict[int, str] = {}
        self.rids: dict[str, int] = {}
        self.violations: list[str] = []
        self.tags: dict[str, set[str]] = {}  # violation -> what it is known as (findings.py)
        self.status_changes: list[tuple[datetime, int, str, str]] = []  # at, sub, status, by
        self.trace: list[str] = []
        self.owners = itertools.count(1)
        self.sleep_events = {(where, n): action for where, n, action in scenario.sleep_events}
        self.sleeps: Counter[str] = Counter()
        self.running: list[int] = []
        self.healing = False
        self.healed_at: datetime | None = None
        self._checked_requests = 0
        self._setup()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.db.dispose()

    # -- setup, SQL as an operator writes it -------------------------------------------------

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.db.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def _setup(self) -> None:
        p = self.scenario.policy
        self.sql("UPDATE merchants SET retry_delays = :d, max_attempts = :m, final_action = :f, "
                 "missed_cycles = :mc, webhook_url = 'http://merchant.test/hook', webhook_secret = 's', "
                 "notify_email = 1, notify_on = 'final_failure,attempt_failed,succeeded', "
                 "min_cycle_interval = '1s' WHERE id = 1",
                 d=p.retry_delays, m=p.max_attempts, f=p.final_action, mc=p.missed_cycles)
        for i, spec in enumerate(self.scenario.subs):
            rid = f"20261128RE{i:010d}ZProp"
            self.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, customer_email, "
                     "product_code, product_name, amount, cron, created_at, updated_at) "
                     "VALUES (:r, :u, :e, 'PLAN', '구독', "
                     ":a, :c, :t, :t)", r=rid, u=f"user-{i}", e=f"c{i}@example.com", a=spec.amount,
                     c=spec.cron, t=T0.replace(tzinfo=None))
            sub_id = self.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=rid)[0][0]
            self.rids[rid] = sub_id
            self.amounts[sub_id] = spec.amount
            self.amount_history[sub_id] = {spec.amount}
            self.sql_status[sub_id] = "active"

    def sub_ids(self) -> list[int]:
        return sorted(self.amounts)

    # -- collaborators injected into the project's code ----------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)

    def client_for(self, _merchant: Any) -> NaverPayClient:
        """Looked up on every call: fixing the credentials takes effect without a restart."""
        if self.secret not in self.clients:
            config = NaverPayConfig(api_base=BASE, partner_id=PARTNER, client_id=CLIENT_ID,
                                    client_secret=self.secret, chain_id=CHAIN_ID,
                                    approval_timeout=APPROVAL_TIMEOUT, read_timeout=READ_TIMEOUT)
            self.clients[self.secret] = NaverPayClient(config, transport=self.transport)
        return self.clients[self.secret]

    def sleep(self, seconds: float) -> None:
        """Time passes while a run sleeps; a scripted event may happen right then."""
        self.advance(seconds)
        where = self.fake.last_kind
        points = [("any", self.sleeps["any"]), (where, self.sleeps[where])]
        self.sleeps.update(["any", where])
        actions = [self.sleep_events[p] for p in points if p in self.sleep_events]
        if self.healing or not actions or not self.running:
            return
        action = actions[0]
        self.trace.append(f"  sleep {points} after a {where} try: {action}")
        if action == "crash":
            raise Crash(f"worker died in sleep {points}")
        sub_id = self.sub_of_charge(self.running[-1])
        self.set_status(sub_id, action, by="sleep")

    def status_of_registration(self, recurrent_id: str) -> str | None:
        rows = self.sql("SELECT status FROM subscriptions WHERE recurrent_id = :r", r=recurrent_id)
        return rows[0][0] if rows else None

    def sub_of_charge(self, charge_id: int) -> int:
        return int(self.sql("SELECT subscription_id FROM charges WHERE id = :i", i=charge_id)[0][0])

    def set_status(self, sub_id: int, action: str, by: str = "step") -> None:
        """pause / cancel / resume, as an operator does it in SQL (only from sensible states)."""
        target, sources = {"pause": ("paused", ("active",)), "cancel": ("canceled", ("active", "paused")),
                           "resume": ("active", ("paused",))}[action]
        current = self.sql("SELECT status FROM subscriptions WHERE id = :i", i=sub_id)[0][0]
        if current not in sources:
            return
        self.sql("UPDATE subscriptions SET status = :s WHERE id = :i", s=target, i=sub_id)
        self.sql_status[sub_id] = target
        self.status_changes.append((self.clock(), sub_id, target, by))

    def _dup(self, payment_id: str, stale: bool) -> None:
        """A second worker runs the same charge while NAVER handles this run's request; with
        ``stale`` the first run has overstayed its lease meanwhile."""
        rows = self.sql("SELECT id FROM charges WHERE payment_id = :p", p=payment_id)
        if not rows:
            return
        if stale:
            self.clock.now += LEASE + timedelta(seconds=1)
        self.trace.append(f"  duplicate run of charge {rows[0][0]} (stale={stale})")
        self.deliver(rows[0][0])

    # -- actions -----------------------------------------------------------------------------

    def walk(self) -> None:
        try:
            report = walk(self.sessions, self.clock(), self.walk_config)
        except Exception as exc:  # noqa: BLE001 - invariant (e)
            name = type(exc).__name__
            self.violate(f"(e) the walk raised {name}: {exc}", f"walk-raised:{name}")
            return
        for charge_id in report.new_charge_ids:
            sub_id, amount = self.sql("SELECT subscription_id, amount FROM charges WHERE id = :i",
                                      i=charge_id)[0]
            self.expected_amount[charge_id] = amount
            # (f) the subscription's amount now, or (if the walk waits for the customer's consent
            # to a raise, DESIGN 4.9) one it had before; never more than it says now
            had = self.amount_history[sub_id]
            if amount > self.amounts[sub_id] or amount not in had:
                self.violate(f"(f) charge {charge_id} was created for {amount} won; the subscription "
                             f"says {self.amounts[sub_id]} won (it had {sorted(had)})")
        self.queue += report.charge_ids
        for sub_id in report.revoking_subscription_ids:
            self.expire(sub_id)

    def deliver(self, charge_id: int) -> None:
        owner = f"worker-{next(self.owners)}"
        self.delivered.append(charge_id)
        self.running.append(charge_id)
        try:
            out = process_charge(self.engine, charge_id, owner)
        except Crash as crash:
            self.trace.append(f"  {owner} died on charge {charge_id}: {crash}")
            return
        except Exception as exc:  # noqa: BLE001 - a task that raises is retried blindly by Celery
            self.violate(f"(e) process_charge({charge_id}) raised {type(exc).__name__}: {exc}")
            return
        finally:
            self.running.pop()
        self.trace.append(f"  {owner} ran charge {charge_id}: {out.status}{' (busy)' if out.busy else ''}")
        if out.expire_subscription_id is not None:
            self.expire(out.expire_subscription_id)

    def expire(self, sub_id: int) -> None:
        try:
            expire_registration(self.sessions, self.client_for, sub_id, self.clock, self.sleep)
        except Crash:
            return
        except Exception as exc:  # noqa: BLE001
            self.violate(f"(e) expire_registration({sub_id}) raised {type(exc).__name__}: {exc}")

    def deliver_all(self, bound: int = 30) -> None:
        for _ in range(bound):
            if not self.queue:
                return
            self.deliver(self.queue.pop(0))

    def apply(self, step: Step) -> None:
        name, *args = step
        self.trace.append(f"{self.clock().isoformat()} {step}")
        subs = self.sub_ids()
        if name == "tick":  # time passes, beat runs the walk, the workers take its messages
            self.advance(args[0])
            self.walk()
            self.deliver_all()
        elif name == "walk":
            self.advance(args[0])
            self.walk()
        elif name == "advance":
            self.advance(args[0])
        elif name == "deliver":
            if self.queue:
                self.deliver(self.queue.pop(args[0] % len(self.queue)))
        elif name == "deliver_all":
            self.deliver_all()
        elif name == "redeliver":  # a duplicate message for a charge already delivered once
            if self.delivered:
                self.deliver(self.delivered[args[0] % len(self.delivered)])
        elif name == "lose":  # a lost message: only the walk can find that charge again
            if self.queue:
                self.queue.pop(args[0] % len(self.queue))
        elif name in ("pause", "cancel", "resume"):
            self.set_status(subs[args[0] % len(subs)], name)
        elif name == "cron":
            sub_id = subs[args[0] % len(subs)]
            self.sql("UPDATE subscriptions SET cron = :c WHERE id = :i", c=args[1], i=sub_id)
        elif name == "amount":
            sub_id = subs[args[0] % len(subs)]
            self.sql("UPDATE subscriptions SET amount = :a WHERE id = :i", a=args[1], i=sub_id)
            self.amounts[sub_id] = args[1]
            self.amount_history[sub_id].add(args[1])
        elif name == "break_creds":
            self.secret = "prop-secret-rotated-and-wrong"
        elif name == "fix_creds":
            self.secret = GOOD_SECRET
        else:  # pragma: no cover
            raise AssertionError(f"unknown step {step!r}")

    def heal(self) -> None:
        """NAVER answers truthfully from now on, credentials are right, nothing is injected any
        more; walks run with time advancing and every enqueued charge is delivered."""
        self.trace.append(f"{self.clock().isoformat()} heal")
        self.healing, self.fake.healed, self.secret = True, True, GOOD_SECRET
        self.healed_at = self.clock()
        for seconds in HEAL_ROUNDS:
            self.advance(seconds)
            for _ in range(5):
                self.walk()
                if not self.queue:
                    break
                self.deliver_all(bound=200)
            self.check()
            if self.violations or self.settled():
                return

    def settled(self) -> bool:
        open_charges = self._open_charges()
        revoking = self.sql("SELECT count(*) FROM subscriptions WHERE status = 'revoking'")[0][0]
        return not open_charges and not revoking and not self.fake.late

    def _open_charges(self) -> list[tuple[Any, ...]]:
        """Charges of cycles due before NAVER healed that are neither final nor surfaced (cycles
        that fall during the heal are billed as usual; the last of them may still be running)."""
        assert self.healed_at is not None
        with self.sessions() as s:
            rows = s.scalars(sa.select(Charge).where(
                Charge.status.not_in(FINAL), Charge.surfaced_at.is_(None),
                Charge.cycle_at <= self.healed_at).order_by(Charge.id))
            return [(c.id, c.subscription_id, c.status, c.held_from, c.last_code, c.next_attempt_at,
                     c.lease_until) for c in rows]

    # -- invariants --------------------------------------------------------------------------

    def violate(self, text: str, *tags: str) -> None:
        if text not in self.tags:
            self.violations.append(text)
            self.tags[text] = set()
        self.tags[text].update(tags)

    def check(self, final: bool = False) -> None:
        self._check(final)

    def _check(self, final: bool) -> None:
        self.fake.land_due()
        fake = self.fake
        charges = {r[0]: r for r in self.sql(
            "SELECT id, subscription_id, merchant_pay_id, status, payment_id, attempt_count, amount "
            "FROM charges")}
        by_mpid = {r[2]: r for r in charges.values()}

        def charge_of(merchant_pay_id: str) -> tuple[Any, ...] | None:
            return by_mpid.get(merchant_pay_id.rsplit("-", 1)[0])

        def in_flight_tags(payment_id: str) -> list[str]:
            """An approval NAVER committed after the client gave up on it, or while another run
            was told AlreadyOnGoing for it (findings.py)."""
            return [tag for tag, seen in (("late-approval-on-given-up-charge", fake.landed_late),
                                          ("approval-in-flight-when-taken-over", fake.seen_in_flight))
                    if payment_id in seen]

        # (a) one approval per (subscription, cycle)
        per_cycle = Counter(e.merchant_pay_id.rsplit("-", 1)[0] for e in fake.approvals)
        for base, n in per_cycle.items():
            if n > 1:
                charge = by_mpid.get(base)
                self.violate(f"(a) NAVER approved {n} payments for cycle {base} "
                             f"(charge {charge[0] if charge else '?'})")

        # (b) no approval request while the subscription is not active
        for req in fake.approval_requests[self._checked_requests:]:
            if req.subscription_status != "active":
                charge = charge_of(req.merchant_pay_id)
                sub_id = self.rids[req.recurrent_id]
                changes = [c for c in self.status_changes if c[1] == sub_id and c[0] <= req.at]
                tags = ["resent-after-cancel-in-sleep"] if changes and changes[-1][3] == "sleep" else []
                self.violate(f"(b) an approval of payment {req.payment_id} "
                             f"(charge {charge[0] if charge else '?'}) reached NAVER at {req.at.isoformat()} "
                             f"while the subscription was {req.subscription_status}", *tags)
        self._checked_requests = len(fake.approval_requests)

        # (f) approved amount = the subscription's amount when the charge was created;
        # (g) money taken never sits on a charge we gave up on
        for event in fake.approvals:
            charge = charge_of(event.merchant_pay_id)
            if charge is None:
                self.violate(f"(g) NAVER approved {event.payment_id} for no charge of ours")
                continue
            expected = self.expected_amount.get(charge[0])
            if expected is not None and event.amount != expected:
                self.violate(f"(f) NAVER approved {event.amount} won on charge {charge[0]}, which was "
                             f"created for {expected} won")
            if charge[3] in ("canceled", "failed", "skipped"):
                tags = in_flight_tags(event.payment_id)
                self.violate(f"(g) NAVER took {event.amount} won ({event.payment_id}, at "
                             f"{event.at.isoformat()}) but charge {charge[0]} is {charge[3]}", *tags)
        for charge_id, expected in self.expected_amount.items():
            if charges[charge_id][6] != expected:
                self.violate(f"(f) charge {charge_id} was created for {expected} won and now says "
                             f"{charges[charge_id][6]} won")

        # (d) attempts, customer notices and final actions only from the customer's declines
        def not_declined(mpid: str, attempt: int) -> tuple[str, ...] | None:
            """Why attempt ``attempt`` of the charge ``mpid`` was no customer decline (or None):
            the message, then the tags."""
            key = f"{mpid}-{attempt}"
            if key in fake.customer_declines:
                return None
            if key in fake.expired_answers:
                return ("NAVER answered TimeExpired: our reservation outlived its window while we waited",
                        "time-expired-counted-as-decline")
            return ("NAVER never declined it for the customer's means",)

        for charge_id, _sub, mpid, _status, _pid, attempts, _amount in charges.values():
            for k in range(1, attempts):
                why = not_declined(mpid, k)
                if why:
                    self.violate(f"(d) charge {charge_id} consumed attempt {k}: {why[0]}", *why[1:])
        for event, charge_id, dedupe in self.sql(
                "SELECT event, charge_id, dedupe_key FROM notifications WHERE event IN "
                "('charge.final_failure', 'charge.attempt_failed')"):
            attempt = int(dedupe.rsplit(":", 1)[1])
            why = not_declined(charges[charge_id][2], attempt)
            if why:
                self.violate(f"(d) the customer is sent {event} for charge {charge_id} attempt {attempt}: "
                             f"{why[0]}", *why[1:])

        def final_failure_tags(sub_id: int) -> tuple[str, ...] | None:
            """None when a failed charge of ``sub_id`` ended on a customer decline; else the tags
            of why its failed charges did not."""
            failed = [c for c in charges.values() if c[1] == sub_id and c[3] == "failed"]
            whys = [not_declined(c[2], c[5]) for c in failed]
            if failed and any(why is None for why in whys):
                return None
            return tuple(tag for why in whys if why for tag in why[1:])

        for sub_id, status, reason in self.sql("SELECT id, status, revoke_reason FROM subscriptions"):
            final_action = (status in ("revoking", "revoked") and reason == "final_failure") or \
                (status == "paused" and self.sql_status[sub_id] != "paused")
            tags = final_failure_tags(sub_id) if final_action else None
            if tags is not None:
                self.violate(f"(d) subscription {sub_id} is {status} ({reason or 'final action pause'}) "
                             "without a failed charge whose last attempt NAVER declined for the customer's "
                             "means", *tags)
        for rid in fake.expired:
            sub_id = self.rids[rid]
            tags = final_failure_tags(sub_id)
            if self.sql_status[sub_id] != "canceled" and tags is not None:
                self.violate(f"(d) NAVER was asked to expire subscription {sub_id}'s registration without "
                             "a customer decline or a merchant cancel", *tags)

        if not final:
            return
        # (c) everything ended, or was surfaced to a human
        open_rows = self._open_charges()
        held_subs = {row[1] for row in open_rows if row[2] == "held"}
        for row in open_rows:
            tags = ["held-never-resumed"] if row[1] in held_subs else []
            self.violate(f"(c) charge {row[0]} (subscription {row[1]}) is still {row[2]} after NAVER healed "
                         f"(held_from={row[3]}, last_code={row[4]}, next_attempt_at={row[5]}, "
                         f"lease_until={row[6]})", *tags)
        for (sub_id,) in self.sql("SELECT id FROM subscriptions WHERE status = 'revoking'"):
            self.violate(f"(c) subscription {sub_id} is still revoking after NAVER healed")
        # (g) the two ledgers agree
        approved = {e.payment_id: e for e in fake.approvals}
        for event in fake.approvals:
            charge = charge_of(event.merchant_pay_id)
            if charge is not None and (charge[3] not in ("succeeded", "amount_mismatch")
                                       or charge[4] != event.payment_id):
                tags = in_flight_tags(event.payment_id)
                if charge[1] in held_subs:  # its resolution waits behind a held charge for ever
                    tags.append("held-never-resumed")
                self.violate(f"(g) NAVER approved {event.payment_id} but charge {charge[0]} is {charge[3]} "
                             f"with payment {charge[4]}", *tags)
        for charge_id, _sub, _mpid, status, payment_id, _att, _amount in charges.values():
            if status == "succeeded" and payment_id not in approved:
                self.violate(f"(g) charge {charge_id} is succeeded but NAVER approved no payment "
                             f"{payment_id}")


def run_scenario(scenario: Scenario) -> World:
    """Play ``scenario`` step by step (invariants after each), heal, check the end state."""
    world = World(scenario)
    try:
        world.walk()  # the first walk schedules every subscription
        for step in scenario.steps:
            world.apply(step)
            world.check()
            if world.violations:
                return world
        world.heal()
        if not world.violations:
            world.check(final=True)
        return world
    finally:
        world.close()


def features(world: World) -> list[str]:
    """What an example exercised (``hypothesis.event``s: ``--hypothesis-show-statistics``)."""
    runs = [line for line in world.trace if " ran charge " in line]
    found = {
        "billed something": bool(runs),
        "NAVER approved": bool(world.fake.approvals),
        "a customer decline": bool(world.fake.customer_declines),
        "a merchant-side fault": bool(world.fake.merchant_faults),
        "a charge held": any(line.endswith(": held") for line in runs),
        "a charge unknown": any(line.endswith(": unknown") for line in runs),
        "a charge retry_wait": any(line.endswith(": retry_wait") for line in runs),
        "a charge failed": any(line.endswith(": failed") for line in runs),
        "a charge canceled": any(line.endswith(": canceled") for line in runs),
        "a busy duplicate": any(line.endswith("(busy)") for line in runs),
        "a worker died": any(" died " in line for line in world.trace),
        "a late approval": bool(world.fake.late) or any("late" in t for t in world.scenario.approve),
        "an expire": bool(world.fake.expired),
    }
    return [name for name, seen in found.items() if seen]


def explain(world: World) -> str:
    """A failure message: the violations, then what happened."""
    return "\n".join(["invariant violations:", *world.violations, "", "trace:", *world.trace[-60:]])
