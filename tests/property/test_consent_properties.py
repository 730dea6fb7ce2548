"""Property: whatever sequence of price changes, consents, withdrawals, SQL amount edits, pauses,
resumes and walks, **no cycle is ever billable above what the customer agreed to** (DESIGN
4.9, the consent rule of ``scheduler/consent.py``).

The oracle is kept apart from the code under test: the customer agreed to the amount at
registration (nothing during a free trial) and to each amount they consented to, from that
change's date on. After every step, every charge the walk made billable (``pending``) must be
at most the largest of those for its cycle, at most the charge's own ``agreed_amount`` (what
the engine re-checks), and never inside the free trial; every charge the gate held is
surfaced. Runs on a fresh SQLite file per example (the property suite's template database).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from models import Charge
from scheduler.walk import WalkConfig, walk
from tests.property.conftest import COVERAGE
from tests.property.world import database
from worker.consent import ConsentError, record_consent, record_consent_to_amount

T0 = datetime(2026, 11, 28, 2, 59, 50, tzinfo=UTC)
AMOUNTS = (9900, 12900, 5000, 15000, 100)
OFFSETS = (0, 300, 900, -300, 1800)

WALK = st.tuples(st.just("walk"), st.sampled_from((300, 60, 600, 900, 1800)))
SQL_AMOUNT = st.tuples(st.just("sql_amount"), st.sampled_from(AMOUNTS))
STEPS = st.one_of(
    WALK, WALK, SQL_AMOUNT, SQL_AMOUNT,
    st.tuples(st.just("change"), st.sampled_from(AMOUNTS), st.sampled_from(OFFSETS), st.booleans()),
    st.tuples(st.just("consent"), st.integers(0, 3)),
    st.tuples(st.just("consent_amount"), st.sampled_from(AMOUNTS)),
    st.tuples(st.just("withdraw"), st.integers(0, 3)),
    st.tuples(st.sampled_from(("pause", "resume")),),
)


class Oracle:
    """What the customer agreed to, kept by the test alone."""

    def __init__(self, amount: int, trial_ends_at: datetime | None) -> None:
        self.trial_ends_at = trial_ends_at
        self.agreed: list[tuple[int, datetime]] = [] if trial_ends_at else [(amount, T0 - timedelta(days=1))]
        self.trial_amount = amount

    def bound(self, cycle_at: datetime) -> int:
        return max([a for a, since in self.agreed if since <= cycle_at], default=0)


class Example:
    def __init__(self, missing: str, amount: int, trial: int | None) -> None:
        self.engine, self.sessions = database().fresh()
        self.now = T0
        self.config = WalkConfig(lease=timedelta(seconds=60), batch_size=50,
                                 missed_grace=timedelta(minutes=30))
        self.sql("UPDATE merchants SET min_cycle_interval = '1s', consent_missing = :m WHERE id = 1",
                 m=missing)
        trial_ends_at = T0 + timedelta(seconds=trial) if trial is not None else None
        self.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
                 "amount, cron, trial_ends_at, created_at, updated_at) VALUES ('RE-P', 'u', 'P', '구독', :a, "
                 "'*/5 * * * *', :t, :n, :n)", a=amount,
                 t=trial_ends_at.replace(tzinfo=None) if trial_ends_at else None, n=T0.replace(tzinfo=None))
        self.sub = self.sql("SELECT id FROM subscriptions")[0][0]
        self.oracle = Oracle(amount, trial_ends_at)
        self.changes: list[int] = []
        self.trace: list[str] = []

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result) if result.returns_rows else []

    def consent(self, change_id: int) -> None:
        row = self.sql("SELECT new_amount, effective_at, status FROM price_changes WHERE id = :i",
                       i=change_id)[0]
        try:
            with self.sessions.begin() as s:
                record_consent(s, change_id, self.now, "property")
        except ConsentError:
            assert row[2] == "canceled"
            return
        effective = row[1] if isinstance(row[1], datetime) else datetime.fromisoformat(str(row[1]))
        self.oracle.agreed.append((row[0], effective.replace(tzinfo=UTC)))

    def trial_change(self) -> None:
        """The walk adds the trial's change when it first sees the row; the test may consent to it."""
        rows = self.sql("SELECT id FROM price_changes WHERE kind = 'trial' AND id NOT IN "
                        f"({', '.join(map(str, self.changes)) or '0'})")
        self.changes += [r[0] for r in rows]

    def apply(self, step: tuple[Any, ...]) -> None:
        name, *args = step
        self.trace.append(f"{self.now:%H:%M:%S} {step}")
        if name == "walk":
            self.now += timedelta(seconds=args[0])
            report = walk(self.sessions, self.now, self.config)
            assert report.failed_steps == [], report.failed_steps
            self.trial_change()
        elif name == "sql_amount":
            self.sql("UPDATE subscriptions SET amount = :a, tax_free_amount = 0 WHERE id = :i",
                     a=args[0], i=self.sub)
        elif name == "change":
            effective = self.now + timedelta(seconds=args[1])
            self.sql("INSERT INTO price_changes (subscription_id, new_amount, effective_at) "
                     "VALUES (:s, :a, :e)", s=self.sub, a=args[0], e=effective.replace(tzinfo=None))
            self.changes.append(self.sql("SELECT max(id) FROM price_changes")[0][0])
            if args[2]:
                self.consent(self.changes[-1])
        elif name == "consent" and self.changes:
            self.consent(self.changes[args[0] % len(self.changes)])
        elif name == "consent_amount":
            with self.sessions.begin() as s:
                change = record_consent_to_amount(s, self.sub, args[0], self.now, "property")
                self.oracle.agreed.append((args[0], change.effective_at))
        elif name == "withdraw" and self.changes:
            self.sql("UPDATE price_changes SET status = 'canceled' WHERE id = :i AND status = 'pending'",
                     i=self.changes[args[0] % len(self.changes)])
        elif name in ("pause", "resume"):
            source, target = ("active", "paused") if name == "pause" else ("paused", "active")
            self.sql("UPDATE subscriptions SET status = :t WHERE id = :i AND status = :s", t=target, s=source,
                     i=self.sub)

    def cover(self) -> None:
        """What this example exercised (the table at the end of the run)."""
        seen = COVERAGE["consent gate"]
        seen["examples"] += 1
        statuses = {r[0] for r in self.sql("SELECT status FROM charges")}
        amounts = {r[0] for r in self.sql("SELECT amount FROM charges WHERE status = 'pending'")}
        marks = {"a charge held for consent": "consent_held" in statuses,
                 "a held charge superseded": bool(self.sql("SELECT 1 FROM charges WHERE status = 'skipped' "
                                                           "AND reason LIKE '%held for consent%'")),
                 "a change applied": bool(self.sql("SELECT 1 FROM price_changes WHERE status = 'applied'")),
                 "paused for want of consent": bool(self.sql("SELECT 1 FROM price_changes WHERE paused_at "
                                                             "IS NOT NULL")),
                 "billed above the first amount": any(a > self.oracle.bound(T0) for a in amounts),
                 "a trial": self.oracle.trial_ends_at is not None}
        seen.update(name for name, hit in marks.items() if hit)

    def check(self) -> None:
        with self.sessions() as s:
            charges = list(s.scalars(sa.select(Charge).order_by(Charge.cycle_at)))
        for c in charges:
            where = (f"charge {c.id} (cycle {c.cycle_at:%H:%M:%S}, {c.status}, {c.amount} won)\n"
                     + "\n".join(self.trace))
            if c.status == "pending":
                assert c.amount <= self.oracle.bound(c.cycle_at), f"billable above the agreed amount: {where}"
                assert c.agreed_amount is not None and c.amount <= c.agreed_amount, where
                trial = self.oracle.trial_ends_at
                assert trial is None or c.cycle_at >= trial, f"billed inside the free trial: {where}"
            if c.status == "consent_held":
                assert c.surfaced_at is not None, f"held silently: {where}"


@given(missing=st.sampled_from(("keep_old", "pause")), amount=st.sampled_from(AMOUNTS),
       trial=st.one_of(st.none(), st.none(), st.sampled_from((600, 1500, 3000))),
       steps=st.lists(STEPS, min_size=3, max_size=20))
def test_no_cycle_is_billable_above_what_the_customer_agreed_to(missing, amount, trial, steps):
    example = Example(missing, amount, trial)
    try:
        for step in [("walk", 10), *steps, ("walk", 300), ("walk", 300)]:
            example.apply(step)
            example.check()
        example.cover()
    finally:
        example.engine.dispose()
