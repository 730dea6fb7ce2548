"""The walk's subscription steps. Every row is decided on its own, so one bad row can never
stop a batch, a step or the walk (isolation by construction).

    step       rows picked (index used)                              effect
    statuses   seen_status 'active', status not active (seen)        seen_status = status
    resume     status 'active', seen_status not active (seen)        reschedule from now
    schedule   status 'active', next_charge_at NULL (due)            first cycle after now
    due        status 'active', next_charge_at <= now (due)          charges, next cycle

Every billed cycle passes the consent gate (:mod:`scheduler.consenting`): billed at the amount
the customer agreed to, skipped, held (``consent_held``) or the subscription paused.

One batch (``batch_size`` rows, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) is one transaction:

1. each row is decided in Python (:func:`scheduler.planning.decide`); a row whose decision
   raises, for any reason, is marked ``invalid`` with the error and the others go on;
2. the batch's charge rows go in with one INSERT ``ON CONFLICT DO NOTHING`` on *every* unique
   column: a cycle that already has its charge (another walk made it) or a ``merchant_pay_id``
   that exists is skipped and logged, never an abort;
3. if the database still refuses the batch (any other error), the transaction is rolled back
   and the batch redone one row per savepoint; a row the database refuses is marked invalid.

Speed (issue 8, the month-start spike): the common batch reads its rows on the driver's
cursor (:class:`scheduler.batchsql.DriverQuery`: the statement compiled once per loop, plain
tuples, each column through its type's converter once per distinct value) into plain objects
that the same decisions read and write, then writes the subscriptions with one
``UPDATE ... WHERE id IN (...)`` per group of rows written alike (a spike is one group),
setting only the columns that changed, and the charges with the one INSERT; the savepoint
redo (step 3) loads ORM objects as before. ``run_step``'s ``on_batch`` receives each batch's
new charge ids right after its commit (the walk task enqueues them there, from a thread of its
own). The merchants of a batch are read once and shared by their rows. The charges' INSERT: on
SQLite a multi-row VALUES on the driver's cursor whose instants are converted once per distinct
value; on PostgreSQL ``INSERT ... SELECT FROM unnest(:arrays)``, an array for each column that
varies in the batch and one value for the others, so psycopg parses one short statement
instead of a 7,500-parameter one per batch (and id lists go as ``= ANY(:array)``). Every
statement on the driver's cursor keeps SQLAlchemy's listeners and error handling
(:class:`models.db.DriverCursor`).

Batch loops (the due step, PostgreSQL): ``WalkConfig.due_loops`` loops at once, each its own
thread, connection and transactions; ``FOR UPDATE SKIP LOCKED`` hands them disjoint rows
(exactly as it does to two walks at once), so one waits on the server while the other
decides. Every batch still commits before its charges are handed over; a cycle still has at
most one charge (the unique columns). SQLite runs one loop (one writer at a time).
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Select, String, Table, bindparam, func, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from models import Charge, ChargeStatus, Merchant, PriceChange, Subscription, UTCDateTime
from models import SubscriptionStatus as SS
from models.db import driver_cursor
from scheduler import consenting
from scheduler.batchsql import DriverQuery, update_by_ids
from scheduler.planning import Decision, decide, merchant_pay_id

log = logging.getLogger(__name__)

NOT_ACTIVE = tuple(s.value for s in SS if s != SS.ACTIVE)
MAX_BATCHES = 10_000


@dataclass(frozen=True)
class WalkConfig:
    """Knobs of the walk (defaults suit production; tests shorten the lease)."""

    batch_size: int = 500
    lease: timedelta = timedelta(minutes=6)
    # Batch loops of the due step at once on PostgreSQL, each on its own connection (SKIP
    # LOCKED hands them disjoint rows; one waits on the server while the other computes).
    # SQLite runs one: it takes one writer at a time.
    due_loops: int = 2
    missed_grace: timedelta = timedelta(hours=1)
    max_cycles_per_subscription: int = 100


@dataclass
class BatchResult:
    """What the subscription steps did (summed over batches)."""

    rows: int = 0  # rows picked up; a full batch means another one may follow
    scheduled: int = 0
    resumed: int = 0  # active again after the walk saw it otherwise: rescheduled from now
    rescheduled: int = 0  # cron or time zone edited: rescheduled from now
    statuses: int = 0  # seen_status recorded for rows that stopped being active
    skipped: int = 0
    conflicts: int = 0  # charge rows not inserted: same cycle or merchant_pay_id exists
    consent_held: int = 0  # charges created held: amount above what the customer agreed to
    invalid: list[tuple[int, str]] = field(default_factory=list)
    new_charge_ids: list[int] = field(default_factory=list)

    def add(self, other: BatchResult) -> None:
        """Sum ``other`` into this one (a WalkReport adds a batch's counts this way)."""
        for f in fields(other):
            mine = getattr(self, f.name)
            setattr(self, f.name, mine + getattr(other, f.name))


Selector = Callable[[datetime], Select[Any]]


def resumed_rows(now: datetime) -> Select[Any]:
    """Active rows the walk last saw not active (resumed by SQL or the CLI)."""
    return select(Subscription).where(Subscription.seen_status.in_(NOT_ACTIVE),
                                      Subscription.status == SS.ACTIVE)


def new_rows(now: datetime) -> Select[Any]:
    """Active rows without a next cycle yet."""
    # No ORDER BY: sorting by id would tempt SQLite to walk the whole primary key instead
    # of the (status, next_charge_at) index.
    return select(Subscription).where(Subscription.status == SS.ACTIVE,
                                      Subscription.next_charge_at.is_(None))


def due_rows(now: datetime) -> Select[Any]:
    """Active rows whose next cycle has come."""
    return select(Subscription).where(Subscription.status == SS.ACTIVE,
                                      Subscription.next_charge_at <= now).order_by(
        Subscription.next_charge_at)


OnBatch = Callable[[list[int]], None]


def run_step(sessions: sessionmaker[Session], rows: Selector, now: datetime,
             config: WalkConfig, on_batch: OnBatch | None = None, loops: int = 1) -> BatchResult:
    """Decide every row ``rows`` selects, batch by batch, each batch its own transaction.
    ``on_batch`` gets each batch's new charge ids right after its commit (the walk task
    enqueues them there, so the first charges run while the walk goes on); it never raises
    into the walk: a failure is logged, and the charges are found again once their lease
    passes.

    ``loops`` > 1 (PostgreSQL only; SQLite runs one): that many batch loops at once, each in
    its own thread and transactions. ``FOR UPDATE SKIP LOCKED`` hands them disjoint rows, as
    it does to two walks at once, and the unique columns keep a cycle to one charge even if
    they did not; ``on_batch`` is then called from those threads. The loops start only
    after a first batch came back full: a walk with less than a batch to do (most walks)
    stays one batch in the caller's thread, exactly as with one loop (a row a second loop
    would read again after the first committed, still due, is decided twice in one walk as
    with two walks at once: never a second charge for a cycle, but twice the bounded catch-up).
    A loop stops at its first short batch: every row not locked by another loop was in it.
    The first error of a loop is raised once all loops ended (their batches are committed;
    the totals are lost, as a failing step's are)."""
    if loops <= 1 or _dialect(sessions) != "postgresql":
        return _loop(sessions, rows, now, config, on_batch)
    first = _loop(sessions, rows, now, config, on_batch, max_batches=1)
    if first.rows < config.batch_size:
        return first
    totals: list[BatchResult] = [first]
    errors: list[BaseException] = []

    def one_loop() -> None:
        try:
            totals.append(_loop(sessions, rows, now, config, on_batch))
        except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=one_loop, name=f"walk-loop-{i}", daemon=True)
               for i in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = BatchResult()
    for part in totals:
        total.add(part)
    return total


def _dialect(sessions: sessionmaker[Session]) -> str:
    bind = sessions.kw.get("bind")
    return str(bind.dialect.name) if bind is not None else ""


def _loop(sessions: sessionmaker[Session], rows: Selector, now: datetime,
          config: WalkConfig, on_batch: OnBatch | None, max_batches: int = MAX_BATCHES) -> BatchResult:
    total = BatchResult()
    # The common batch's read, compiled once for the loop (its ``now`` is the walk's).
    reader: DriverQuery | None = None
    bind = sessions.kw.get("bind")
    try:
        reader = DriverQuery(_light(rows(now), config), bind.dialect) if bind is not None else None
    except Exception:  # noqa: BLE001 - a slower read, never a stopped walk
        log.exception("the walk's batch read could not be compiled for the driver; reading through "
                      "SQLAlchemy")
    for _ in range(max_batches):
        try:
            with sessions.begin() as session:
                result = _batch(session, rows(now), now, config, isolate=False, reader=reader)
        except SQLAlchemyError:
            log.exception("a batch of the walk failed; redoing it one subscription at a time")
            with sessions.begin() as session:
                result = _batch(session, rows(now), now, config, isolate=True)
        total.add(result)
        if on_batch is not None and result.new_charge_ids:
            try:
                on_batch(result.new_charge_ids)
            except Exception:  # noqa: BLE001 - committed charges come back after their lease
                log.exception("enqueueing %d new charges failed; the walk takes them again after "
                              "their lease", len(result.new_charge_ids))
        if result.rows < config.batch_size:
            break
    return total


def record_statuses(sessions: sessionmaker[Session], config: WalkConfig) -> int:
    """seen_status = status for rows that stopped being active since the walk last saw them,
    so that a later resume is recognised (changes among non-active statuses do not matter)."""
    total = 0
    for _ in range(MAX_BATCHES):
        with sessions.begin() as session:
            ids = list(session.scalars(
                select(Subscription.id).where(Subscription.seen_status == SS.ACTIVE,
                                              Subscription.status.in_(NOT_ACTIVE))
                .limit(config.batch_size).with_for_update(skip_locked=True)))
            if ids:
                session.execute(update(Subscription).where(Subscription.id.in_(ids))
                                .values(seen_status=Subscription.status)
                                .execution_options(synchronize_session=False))
        total += len(ids)
        if len(ids) < config.batch_size:
            break
    return total


def _light(query: Select[Any], config: WalkConfig) -> Select[Any]:
    """The common batch's read: the row's own columns, a batch's worth, locked."""
    return (query.with_only_columns(*_SUB_COLUMNS)
            .limit(config.batch_size).with_for_update(skip_locked=True, of=_SUBSCRIPTIONS))


def _batch(session: Session, query: Select[Any], now: datetime, config: WalkConfig,
           *, isolate: bool, reader: DriverQuery | None = None) -> BatchResult:
    # SKIP LOCKED: concurrent walks on PostgreSQL take disjoint rows; ignored on SQLite,
    # where BEGIN IMMEDIATE serialises writers anyway.
    if isolate:
        locked = query.limit(config.batch_size).with_for_update(skip_locked=True, of=Subscription)
        subs = session.scalars(locked).unique().all()
        result = BatchResult(rows=len(subs))
        for sub in subs:
            _one_in_savepoint(session, sub, now, config, result)
        return result
    # The common case, in Core (a month-start spike is 100,000 of these rows): the same query's
    # rows as plain objects, every decision made in Python as above (the consent gate included),
    # then one UPDATE per group of rows written alike and one INSERT of the charges.
    conn = session.connection()
    rows = [_Row(r) for r in (reader.rows(conn) if reader is not None
                              else conn.execute(_light(query, config)))]
    # Their merchants in one query (a spike: one merchant), each shared by its rows (read only).
    wanted = {row.merchant_id for row in rows if row.merchant_id is not None}
    merchants = {m[0]: _Merchant(m) for m in conn.execute(
        select(*_MERCHANT_COLUMNS).where(_MERCHANTS.c.id.in_(wanted)))} if wanted else {}
    for row in rows:
        row.merchant = merchants.get(row.merchant_id)  # None: no such merchant row
    result = BatchResult(rows=len(rows))
    decided = [(cast(Subscription, row), _decide(cast(Subscription, row), now, config)) for row in rows]
    changes = consenting.open_changes(session, [sub.id for sub, d in decided if _gated(sub, d)])
    charge_rows: list[dict[str, Any]] = []
    for sub, decision in decided:
        charge_rows += _apply(session, sub, decision, changes.get(sub.id, []), now, config, result)
    # Rows written alike (a spike: one cron, one due instant, one plan) go in one UPDATE ... IN,
    # which sets only the columns that changed (the others' indexes are left alone).
    groups: dict[tuple[tuple[int, ...], tuple[Any, ...]], list[int]] = {}
    for row in rows:
        written = _written(row)
        if written != row.loaded:
            changed = tuple(k for k, (new, old) in enumerate(zip(written, row.loaded, strict=True))
                            if new != old or type(new) is not type(old))
            groups.setdefault((changed, tuple(written[k] for k in changed)), []).append(row.id)
    for (changed, values), ids in groups.items():
        update_by_ids(conn, _SUBSCRIPTIONS, {_WRITTEN[k]: v for k, v in zip(changed, values, strict=True)},
                      ids)
    _insert(session, charge_rows, result)
    return result


def _gated(sub: Subscription, decision: Decision) -> bool:
    """Whether the consent gate needs this row's open price changes (one query per batch)."""
    return sub.agreed_amount is None or any(reason is None for _, reason in decision.cycles)


_SUBSCRIPTIONS = cast(Table, Subscription.__table__)
_MERCHANTS = cast(Table, Merchant.__table__)
# What the walk's decisions write (planning, validation, the consent gate: amounts, agreed
# amount, a pause; the upcoming notice) and read. A column missing here would be an
# AttributeError on ``_Row`` (its __slots__): tests/scheduler run every path through both.
_WRITTEN = ("next_charge_at", "updated_at", "last_error", "seen_status", "scheduled_cron",
            "scheduled_timezone", "status", "amount", "tax_free_amount", "agreed_amount",
            "upcoming_notice_at")
_READ = ("id", "merchant_id", "recurrent_id", "merchant_user_id", "product_code", "product_name",
         "cron", "timezone", "trial_ends_at")
_OWN = (*_READ, *_WRITTEN)
_SUB_COLUMNS = [_SUBSCRIPTIONS.c[name] for name in _OWN]
_MERCHANT_FIELDS = ("id", "name", "retry_delays", "max_attempts", "retryable_codes",
                    "min_cycle_interval", "missed_cycles", "consent_missing", "upcoming_notice_days")
_MERCHANT_COLUMNS = [_MERCHANTS.c[name] for name in _MERCHANT_FIELDS]
_written = operator.attrgetter(*_WRITTEN)  # the columns ``_apply`` may write, as they are now


class _Merchant:
    """The merchant columns the walk's decisions read."""

    __slots__ = _MERCHANT_FIELDS

    def __init__(self, values: Any) -> None:
        for name, value in zip(_MERCHANT_FIELDS, values, strict=True):
            setattr(self, name, value)


class _Row:
    """A subscription row as the walk's decisions read and write it (``planning.decide``,
    ``validation.problems`` and ``_apply`` take it for a ``Subscription``): its columns, its
    merchant (None: no such merchant row), and what ``_apply`` wrote."""

    __slots__ = (*_READ, *_WRITTEN, "merchant", "loaded")
    id: int
    merchant_id: int | None
    merchant: _Merchant | None

    def __init__(self, row: Any) -> None:
        values = tuple(row)  # in the order of _SUB_COLUMNS
        for name, value in zip(_OWN, values, strict=True):
            setattr(self, name, value)
        self.loaded = values[len(_READ):]


def _one_in_savepoint(session: Session, sub: Subscription, now: datetime, config: WalkConfig,
                      result: BatchResult) -> None:
    sub_id, mine = sub.id, BatchResult()
    try:
        with session.begin_nested():
            decision = _decide(sub, now, config)
            changes = consenting.open_changes(session, [sub.id]).get(sub.id, [])
            _insert(session, _apply(session, sub, decision, changes, now, config, mine), mine)
    except SQLAlchemyError as exc:
        # The savepoint is gone, and with it whatever this row's decision wrote.
        message = f"the database refused this subscription's charges: {_error(exc)}"
        session.execute(update(Subscription).where(Subscription.id == sub_id).values(
            status=SS.INVALID, seen_status=SS.INVALID, last_error=message, updated_at=now))
        result.invalid.append((sub_id, message))
        log.error("subscription %s is invalid: %s", sub_id, message, extra={"subscription_id": sub_id})
        return
    result.add(mine)


def _decide(sub: Subscription, now: datetime, config: WalkConfig) -> Decision:
    try:
        return decide(sub, now, missed_grace=config.missed_grace,
                      max_cycles=config.max_cycles_per_subscription)
    except Exception as exc:  # noqa: BLE001 - one row, whatever its fault, never stops the walk
        log.exception("subscription %s could not be planned", sub.id)
        return Decision(problems=(f"the walk could not plan this subscription: {_error(exc)}",))


def _error(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]


def _apply(session: Session, sub: Subscription, decision: Decision, changes: list[PriceChange],
           now: datetime, config: WalkConfig, result: BatchResult) -> list[dict[str, Any]]:
    """Write ``decision`` on the row; return the charge rows to insert (each billed cycle
    through the consent gate, :mod:`scheduler.consenting`)."""
    if decision.problems:
        _mark_invalid(sub, decision.problems, now, result)
        return []
    if decision.rescheduled:
        log.info("subscription %s: next cycle %s (%s)", sub.id, decision.next_charge_at,
                 decision.rescheduled, extra={"subscription_id": sub.id})
        if decision.rescheduled == "resumed":
            result.resumed += 1
        elif decision.rescheduled == "schedule changed":
            result.rescheduled += 1
        else:
            result.scheduled += 1
    if decision.rescheduled or decision.cycles:
        sub.next_charge_at, sub.updated_at, sub.last_error = decision.next_charge_at, now, None
        sub.seen_status = SS.ACTIVE
        sub.scheduled_cron, sub.scheduled_timezone = " ".join(sub.cron.split()), sub.timezone
        sub.upcoming_notice_at = _upcoming_notice_at(sub)
    consenting.first_sight(session, sub, changes, now)
    planned = consenting.plan_amounts(sub, decision.cycles, changes, now)
    return [_charge_row(sub, p, now, config) for p in planned]


def _upcoming_notice_at(sub: Subscription) -> datetime | None:
    """When the upcoming-charge notice of the next cycle is due (merchant setting; NULL off)."""
    days = sub.merchant.upcoming_notice_days
    if not days or sub.next_charge_at is None:
        return None
    return sub.next_charge_at - timedelta(days=days)


def _mark_invalid(sub: Subscription, reasons: Sequence[str], now: datetime,
                  result: BatchResult) -> None:
    message = "; ".join(reasons)
    sub.status = sub.seen_status = SS.INVALID
    sub.last_error, sub.updated_at = message, now
    result.invalid.append((sub.id, message))
    log.error("subscription %s is invalid: %s", sub.id, message,
              extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})


def _charge_row(sub: Subscription, planned: consenting.Planned, now: datetime,
                config: WalkConfig) -> dict[str, Any]:
    # Every row has the same keys (one multi-row INSERT).
    row = {"subscription_id": sub.id, "recurrent_id": sub.recurrent_id, "cycle_at": planned.cycle_at,
           "merchant_pay_id": merchant_pay_id(sub.id, planned.cycle_at), "amount": planned.amount,
           "tax_free_amount": min(sub.tax_free_amount, planned.amount), "agreed_amount": planned.agreed,
           "status": planned.status, "reason": planned.reason,
           "lease_until": now + config.lease if planned.status == ChargeStatus.PENDING else None,
           "surfaced_at": None, "next_attempt_at": None, "last_code": None,
           "created_at": now, "updated_at": now}
    if planned.status == ChargeStatus.CONSENT_HELD:
        row.update(consenting.held_values(planned, now))
        log.error("subscription %s: cycle %s held for consent: %s", sub.id, planned.cycle_at,
                  planned.reason, extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})
    return row


_CHARGES = cast(Table, Charge.__table__)
# The columns of every row ``_charge_row`` builds (consent_held ones set some of them).
_CHARGE_COLUMNS = ("subscription_id", "recurrent_id", "cycle_at", "merchant_pay_id", "amount",
                   "tax_free_amount", "agreed_amount", "status", "reason", "lease_until", "surfaced_at",
                   "next_attempt_at", "last_code", "created_at", "updated_at")
_RETURNED = (_CHARGES.c.id, _CHARGES.c.status, _CHARGES.c.subscription_id, _CHARGES.c.cycle_at)
# SQLite: the instants go in already converted (``_sqlite_params``), as plain text.
_INSTANTS = tuple(name for name in _CHARGE_COLUMNS if isinstance(_CHARGES.c[name].type, UTCDateTime))


def _sqlite_params(session: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with each instant converted as its column's type converts it (aware UTC ->
    SQLite's text), once per distinct instant of the batch instead of once per row and column
    (a spike's rows share their cycle, lease and timestamps)."""
    dialect = session.get_bind().dialect
    convert = _CHARGES.c.cycle_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert convert is not None and all(_CHARGES.c[n].type.__class__ is UTCDateTime for n in _INSTANTS)
    done: dict[datetime, Any] = {}
    params = []
    for row in rows:
        if len(row) != len(_CHARGE_COLUMNS):
            raise ValueError(f"a charge row has columns other than {_CHARGE_COLUMNS}")
        param = dict(row)
        for name in _INSTANTS:
            value = row[name]
            if value is None:
                continue
            if value.tzinfo is not UTC or type(value) is not datetime:
                # (an aware datetime in a DST zone compares by wall time: no memo for it)
                param[name] = convert(value)
                continue
            text = done.get(value)
            if text is None:
                text = done[value] = convert(value)
            param[name] = text
        params.append(param)
    return params


@lru_cache(maxsize=64)
def _unnest_charges(varying: tuple[str, ...]) -> Any:
    """PostgreSQL: ``INSERT INTO charges SELECT ... FROM unnest(:array, ...)`` with one array per
    column in ``varying`` and one value for each other column (the same for every row of the
    batch: a spike's rows differ only in their subscription). Its text depends only on
    ``varying``, so psycopg parses it once."""
    arrays = [sql_cast(bindparam(f"u_{name}", type_=ARRAY(_wide(name))), ARRAY(_wide(name)))
              for name in varying]
    source = func.unnest(*arrays).table_valued(*varying, name="new_charges").render_derived()
    picked = [source.c[name] if name in varying
              else sql_cast(bindparam(f"u_{name}", type_=_wide(name)), _wide(name))
              for name in _CHARGE_COLUMNS]
    return (postgresql.insert(_CHARGES).from_select(_CHARGE_COLUMNS, select(*picked))
            .on_conflict_do_nothing().returning(*_RETURNED))


def _wide(name: str) -> Any:
    """The column's type without a length: PostgreSQL's CAST to varchar(n) cuts a longer value
    silently, where the INSERT itself refuses it (the row then becomes invalid, never cut)."""
    column_type = _CHARGES.c[name].type
    return String() if isinstance(column_type, String) else column_type


def _pg_insert_params(rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The columns that vary across ``rows`` (the subscription id always: unnest needs one
    array) and the parameters: a list for each of those, the one value for the others."""
    if any(len(row) != len(_CHARGE_COLUMNS) for row in rows):
        raise ValueError(f"a charge row has columns other than {_CHARGE_COLUMNS}")
    varying: list[str] = []
    params: dict[str, Any] = {}
    for name in _CHARGE_COLUMNS:
        values = [row[name] for row in rows]
        first = values[0]
        # Alike = equal, of one type, and an instant only in UTC (in a DST zone two instants an
        # hour apart compare equal by their wall time).
        if (name == "subscription_id" or isinstance(first, datetime) and first.tzinfo is not UTC
                or any(v != first or type(v) is not type(first) for v in values)):
            varying.append(name)
            params[f"u_{name}"] = values
        else:
            params[f"u_{name}"] = first
    return tuple(varying), params


@lru_cache(maxsize=64)
def _pg_insert_text(varying: tuple[str, ...], dialect: Any) -> str:
    """``_unnest_charges(varying)`` compiled once for the driver (named ``%(u_column)s``)."""
    return str(_unnest_charges(varying).compile(dialect=dialect).string)


def _pg_insert(session: Session, varying: tuple[str, ...],
               params: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """Run ``_unnest_charges(varying)`` with ``params`` (``_pg_insert_params``) on the driver's
    cursor, every value through its column's converter (an array's items one by one, each
    distinct one once): the rows RETURNING gave, and each row's ``cycle_at`` as bound (what
    RETURNING gives back for it)."""
    conn = session.connection()
    dialect = conn.dialect
    bound: dict[str, Any] = {}
    for name in _CHARGE_COLUMNS:
        value = params[f"u_{name}"]
        convert = _CHARGES.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if convert is None:
            bound[f"u_{name}"] = value
        elif name in varying:
            bound[f"u_{name}"] = _convert_each(value, convert)
        else:
            bound[f"u_{name}"] = None if value is None else convert(value)
    with driver_cursor(conn) as cursor:
        cursor.execute(_pg_insert_text(varying, dialect), bound)
        done = cursor.fetchall()
    cycles = bound["u_cycle_at"]
    count = len(params["u_subscription_id"])
    return done, cycles if "cycle_at" in varying else [cycles] * count


def _convert_each(values: list[Any], convert: Callable[[Any], Any]) -> list[Any]:
    """``convert`` of each non-NULL value; a UTC instant converted once per distinct value (an
    aware instant in a DST zone compares by wall time: converted every time)."""
    memo: dict[datetime, Any] = {}
    out: list[Any] = []
    for value in values:
        if value is None:
            out.append(None)
        elif type(value) is datetime and value.tzinfo is UTC:
            done = memo.get(value)
            if done is None:
                done = memo[value] = convert(value)
            out.append(done)
        else:
            out.append(convert(value))
    return out


def _insert(session: Session, rows: list[dict[str, Any]], result: BatchResult) -> None:
    """Insert-or-ignore on every unique column; count what went in, log what did not."""
    session.flush()  # the subscriptions' new next_charge_at goes out in the same transaction
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        # One statement over one array per varying column (INSERT ... SELECT FROM unnest): a
        # short text psycopg parses once, instead of a VALUES list it would parse every batch.
        # On the driver's cursor: SQLAlchemy compiled this statement again for every batch.
        varying, params = _pg_insert_params(rows)
        done_rows, cycles = _pg_insert(session, varying, params)
        keys = list(zip((row["subscription_id"] for row in rows), cycles, strict=True))
    else:
        # The driver's own cursor, one multi-row VALUES per chunk (the instants converted once
        # per distinct value): SQLAlchemy's per-row parameter handling was most of the INSERT.
        converted = _sqlite_params(session, rows)
        done_rows = _sqlite_insert(session, converted)
        keys = [(row["subscription_id"], row["cycle_at"]) for row in converted]
    inserted = set()
    for charge_id, status, subscription_id, cycle_at in done_rows:
        inserted.add((subscription_id, cycle_at))
        if status == ChargeStatus.SKIPPED:
            result.skipped += 1
        elif status == ChargeStatus.CONSENT_HELD:
            result.consent_held += 1
        else:
            result.new_charge_ids.append(charge_id)
    for row, key in zip(rows, keys, strict=True):
        if key not in inserted:
            result.conflicts += 1
            log.warning("charge of subscription %s for cycle %s not inserted: a charge for that "
                        "cycle or with merchant_pay_id %s already exists", row["subscription_id"],
                        row["cycle_at"], row["merchant_pay_id"],
                        extra={"subscription_id": row["subscription_id"]})


# SQLite, on the driver's cursor: the rows of one batch in chunks of at most this many (15
# parameters a row, well inside SQLite's default limit of 32,766 parameters per statement).
_SQLITE_CHUNK = 1000


@lru_cache(maxsize=16)
def _sqlite_insert_text(count: int) -> str:
    """``INSERT INTO charges (...) VALUES (?, ...) x count ON CONFLICT DO NOTHING RETURNING``
    the columns ``_insert`` reads (``cycle_at`` as stored: the text it was bound as)."""
    one = f"({', '.join('?' * len(_CHARGE_COLUMNS))})"
    return (f"INSERT INTO {_CHARGES.name} ({', '.join(_CHARGE_COLUMNS)}) VALUES "
            f"{', '.join([one] * count)} ON CONFLICT DO NOTHING "
            f"RETURNING {', '.join(c.name for c in _RETURNED)}")


def _sqlite_insert(session: Session, params: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Insert ``params`` (``_sqlite_params``' rows: every value as the driver takes it) through
    the driver's cursor in the session's transaction; the rows RETURNING gave."""
    dialect = session.get_bind().dialect
    assert not any(_CHARGES.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                   for name in _CHARGE_COLUMNS if name not in _INSTANTS), "a column needs converting"
    done: list[tuple[Any, ...]] = []
    with driver_cursor(session.connection()) as cursor:
        for start in range(0, len(params), _SQLITE_CHUNK):
            part = params[start:start + _SQLITE_CHUNK]
            cursor.execute(_sqlite_insert_text(len(part)),
                           [row[name] for row in part for name in _CHARGE_COLUMNS])
            done += cursor.fetchall()
    return done
