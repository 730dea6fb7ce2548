"""The charge's storage primitives: run ownership, the per-registration lease, compare-and-set.

* :func:`acquire_lease` takes the subscription's lease (``lock_owner``/``lock_until``), which
  makes "one charge per recurrentId at a time" hold across processes and machines, and makes
  the run the charge's owner (``lease_owner``). A lease that ran out (its worker died, or a
  run overstayed) can be taken over; the new run then resolves whatever state the old one left.
  It then loads the charge, its subscription and merchant in **one** SELECT into plain
  dataclasses (:class:`ChargeRow`), with the older-cycle check folded in as a subquery.
* :func:`compare_and_set` moves a charge to a new status only if it is still in one of the
  expected ones **and the run still owns it**: two runs racing on a transition cannot both
  win it, and a run that lost its lease (:class:`LeaseLost`) stops without writing. Every
  transition renews the lease and records the status the row actually moved from
  (``prev_status``, returned by the same UPDATE), which is what the log line prints. A
  transition to a final status can release the leases in the same transaction.
* :func:`renew` extends both leases after each NAVER call; a run that finds it no longer owns
  the charge stops there. :func:`renew_lock` renews the subscription's lock and reads its
  status in one statement (cancel wins: the status read before a NAVER call).

Everything here is SQLAlchemy Core with statements built once (bound parameters), executed on
a ``Connection`` or a ``Session`` (both have ``execute``): the charge path runs them several
times per charge, and the ORM's unit of work and identity map cost more than the SQL. On a
``Connection`` the statements of :class:`Prepared` run on the driver's own cursor (compiled
once, SQLAlchemy's error handling kept), which halved their CPU.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import (
    Connection,
    Dialect,
    Executable,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.expression import ClauseElement

from models import (
    FINAL_CHARGE_STATUSES,
    NONFINAL_CHARGE_STATUSES,
    UNSETTLED_CHARGE_STATUSES,
    Charge,
    ChargeAttempt,
    Merchant,
    Subscription,
    UTCDateTime,
)
from models import ChargeStatus as CS
from models.db import driver_cursor, rowcount

log = logging.getLogger(__name__)
CHARGES = cast(Table, Charge.__table__)  # Core statements: these run several times per charge
SUBSCRIPTIONS = cast(Table, Subscription.__table__)
MERCHANTS = cast(Table, Merchant.__table__)
ATTEMPTS = cast(Table, ChargeAttempt.__table__)
SETTLED = [CS.RETRY_WAIT.value, CS.HELD.value, CS.CONSENT_HELD.value,
           *(status.value for status in FINAL_CHARGE_STATUSES)]
WAITED_FOR = [status.value for status in NONFINAL_CHARGE_STATUSES if status != CS.HELD]
UNSETTLED = [status.value for status in UNSETTLED_CHARGE_STATUSES]
FINAL = [status.value for status in FINAL_CHARGE_STATUSES]

Executor = Connection | Session  # both run Core statements; a Session joins its transaction


class LeaseLost(Exception):
    """Another run owns this charge now (ours overstayed its lease): stop, write nothing."""


# --- statements compiled once -------------------------------------------------------------

Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...] | None  # positional dialects: the order of the parameters
    binds: tuple[tuple[str, Processor], ...]  # parameters whose type converts the value
    defaults: tuple[tuple[str, Any], ...]  # parameters the statement gives a value (LIMIT 1)
    returns: bool  # a SELECT or RETURNING: the driver gives rows back
    results: tuple[Processor | None, ...] | None  # a SELECT's column converters (None: none convert)


class _Done:
    """What a statement run on the driver's cursor gave back: rows matched, the first row."""

    __slots__ = ("rowcount", "row")

    def __init__(self, rowcount: int, row: tuple[Any, ...] | None) -> None:
        self.rowcount, self.row = rowcount, row

    def first(self) -> tuple[Any, ...] | None:
        return self.row


class Prepared:
    """A fixed Core statement, compiled once per dialect and run on the driver's cursor.

    ``Connection.execute`` of a short statement spends most of its time in the statement
    cache lookup, parameter construction and result set-up, not in the database; even
    ``exec_driver_sql`` builds an execution context and a cursor result for each statement.
    The charge path runs the same few statements per charge, so each is compiled once (public
    ``compile``), its bound values are converted with the same type processors ``execute``
    would use (``UTCDateTime`` included), and a SELECT's columns with the types' result
    processors. It then runs on the connection's DBAPI cursor (``models.db.DriverCursor``),
    inside the transaction the ``Connection`` began (one is begun first if none is, as
    ``execute`` would). A driver error goes through the connection's own handling: wrapped as
    ``sqlalchemy.exc.DBAPIError`` (``IntegrityError``, ``OperationalError``...),
    ``handle_error`` events, and a lost connection invalidated so the pool never hands it out
    again. Only the first row of a result is kept (every statement here returns at most one).

    Through an ORM ``Session`` (rarer steps) a statement runs SQLAlchemy's ordinary way; when
    the engine has ``before_cursor_execute``/``after_cursor_execute`` listeners (tracing such
    as OpenTelemetry's, statement logs in tests) it runs through ``exec_driver_sql``, so they
    get the execution context they expect.
    """

    __slots__ = ("statement", "column_keys", "_by_dialect")

    def __init__(self, statement: Executable, column_keys: Sequence[str] | None = None) -> None:
        self.statement, self.column_keys = statement, list(column_keys) if column_keys else None
        self._by_dialect: dict[Dialect, _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect)
        if found is None:
            compiled = cast(Any, self.statement).compile(dialect=dialect, column_keys=self.column_keys)
            assert "POSTCOMPILE" not in compiled.string, "expanding parameters are not supported"
            # Python-side column defaults run in execute(), not here: none may be involved.
            assert not compiled.insert_prefetch and not compiled.update_prefetch, "Python-side defaults"
            binds, defaults = [], []
            for name, bind in compiled.binds.items():
                processor = bind.type.bind_processor(dialect)
                if processor is not None:
                    binds.append((name, processor))
                if not bind.required:
                    defaults.append((name, bind.effective_value))
            positional = tuple(compiled.positiontup) if compiled.positional else None
            results = None
            if isinstance(self.statement, Select):
                processors = tuple(column.type.result_processor(dialect, None)
                                   for column in self.statement.selected_columns)
                results = processors if any(processors) else None
            returns = isinstance(self.statement, Select) or bool(compiled.effective_returning)
            found = self._by_dialect[dialect] = _Compiled(compiled.string, positional, tuple(binds),
                                                          tuple(defaults), returns, results)
        return found

    def execute(self, s: Executor, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
        """Run it; the result (``rowcount``, ``first()``: see :meth:`first`)."""
        if isinstance(s, Session):
            return s.execute(self.statement, params)
        compiled = self._compiled(s.dialect)
        if isinstance(params, Mapping):
            return self._run(s, compiled, self._params(compiled, params), False)
        return self._run(s, compiled, [self._params(compiled, row) for row in params], True)

    @staticmethod
    def _run(conn: Connection, compiled: _Compiled, params: Any, many: bool) -> _Done:
        assert not (many and compiled.returns), "rows back from executemany are not supported"
        with driver_cursor(conn) as cursor:
            if many:
                cursor.executemany(compiled.sql, params)
            else:
                cursor.execute(compiled.sql, params)
            rows = cursor.fetchall() if compiled.returns else []
            count = cursor.rowcount
        if len(rows) > 1:
            raise AssertionError(f"more than one row from {compiled.sql!r}")
        row = tuple(rows[0]) if rows else None
        if row is not None and compiled.results is not None:
            row = tuple([value if convert is None else convert(value)
                         for convert, value in zip(compiled.results, row, strict=True)])
        return _Done(count, row)

    @staticmethod
    def _params(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        if compiled.defaults:
            params = {**dict(compiled.defaults), **params}
        if compiled.binds:
            converted = dict(params)
            for name, processor in compiled.binds:
                value = converted.get(name)
                if value is not None:
                    converted[name] = processor(value)
            params = converted
        if compiled.names is not None:
            return tuple([params[name] for name in compiled.names])
        return params

    def rowcount(self, s: Executor, params: Mapping[str, Any]) -> int:
        """Rows matched (UPDATE)."""
        return rowcount(self.execute(s, params))

    def first(self, s: Executor, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row, its values converted as ``execute`` would."""
        row = self.execute(s, params).first()
        return None if row is None else tuple(row)

    def scalar(self, s: Executor, params: Mapping[str, Any]) -> Any:
        row = self.first(s, params)
        return None if row is None else row[0]


# --- the rows a run works on -------------------------------------------------------------------

class MerchantSettings(Protocol):
    """What a NAVER Pay client is built from (a ``Merchant`` row or a :class:`MerchantRow`)."""

    @property
    def id(self) -> int: ...
    @property
    def api_base(self) -> str | None: ...
    @property
    def partner_id(self) -> str | None: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def client_secret_env(self) -> str | None: ...
    @property
    def chain_id(self) -> str | None: ...


@dataclass(slots=True)
class MerchantRow:
    """The merchant columns a charge reads (credentials refs, policy, notification target)."""

    id: int
    api_base: str | None
    partner_id: str | None
    client_id: str | None
    client_secret_env: str | None
    chain_id: str | None
    retry_delays: str
    max_attempts: int
    retryable_codes: str
    final_action: str
    webhook_url: str | None
    notify_email: int
    notify_on: str
    settlement_basis: str  # issue 9: which follow-up calls a success owes (worker/followups.py)
    point_basis: str
    followup_delay: str


@dataclass(slots=True)
class SubscriptionRow:
    """The subscription columns a charge reads; ``status`` as this run last read it."""

    id: int
    merchant_id: int
    recurrent_id: str
    merchant_user_id: str
    customer_email: str | None
    product_code: str
    product_name: str
    status: str
    merchant: MerchantRow


@dataclass(slots=True)
class ChargeRow:
    """A charge as this run last read or wrote it. Every column a transition may write is an
    attribute; those after ``subscription`` are not loaded (a run never reads them) and stay
    None until this run writes them."""

    id: int
    subscription_id: int
    recurrent_id: str
    cycle_at: datetime
    merchant_pay_id: str
    amount: int
    tax_free_amount: int
    status: str
    payment_id: str | None
    attempt_count: int
    next_attempt_at: datetime | None
    lease_owner: str | None
    held_from: str | None
    backoff_count: int
    key_round: int
    last_code: str | None
    updated_at: datetime
    agreed_amount: int | None  # the consent gate's answer when the walk created it
    subscription: SubscriptionRow
    # An older cycle of the same registration still open when the row was loaded (see
    # :func:`older_open_charge`); read once, by the step that starts an attempt.
    older_open: int | None = None
    lease_until: datetime | None = None
    prev_status: str | None = None
    stuck_since: datetime | None = None
    surfaced_at: datetime | None = None
    last_message: str | None = None
    approved_amount: int | None = None
    approved_at: datetime | None = None
    reason: str | None = None


_LOADED = ChargeRow.__slots__[:ChargeRow.__slots__.index("subscription")]
_MERCHANT_COLS = [MERCHANTS.c[name] for name in MerchantRow.__slots__]
_SUB_COLS = [SUBSCRIPTIONS.c[name] for name in SubscriptionRow.__slots__ if name != "merchant"]
_CHARGE_COLS = [CHARGES.c[name] for name in _LOADED]
_OLDER = CHARGES.alias("older")


def _older_than(charge_table: Any) -> Any:
    """An older cycle of the same subscription that is not final and not surfaced to a human
    (a held charge has alerted the merchant; a surfaced one a human)."""
    return (select(_OLDER.c.id)
            .where(_OLDER.c.subscription_id == charge_table.c.subscription_id,
                   _OLDER.c.cycle_at < charge_table.c.cycle_at,
                   _OLDER.c.status.in_([literal_column(f"'{s}'") for s in WAITED_FOR]),
                   _OLDER.c.surfaced_at.is_(None))
            .order_by(_OLDER.c.cycle_at).limit(1))


def _p(name: str, datetime_: bool = False) -> Any:
    return bindparam(name, type_=UTCDateTime()) if datetime_ else bindparam(name)


_LOAD = Prepared(select(*_CHARGE_COLS, *_SUB_COLS, *_MERCHANT_COLS,
                _older_than(CHARGES).scalar_subquery().label("older_open"))
         .select_from(CHARGES.join(SUBSCRIPTIONS, SUBSCRIPTIONS.c.id == CHARGES.c.subscription_id)
                      .join(MERCHANTS, MERCHANTS.c.id == SUBSCRIPTIONS.c.merchant_id))
         .where(CHARGES.c.id == _p("p_charge")))
_NC, _NS = len(_CHARGE_COLS), len(_SUB_COLS)


def _row(values: tuple[Any, ...]) -> ChargeRow:
    # charge columns, subscription columns, merchant columns, older_open
    merchant = MerchantRow(*values[_NC + _NS:-1])
    sub = cast(Any, SubscriptionRow)(*values[_NC:_NC + _NS], merchant)
    return cast(ChargeRow, cast(Any, ChargeRow)(*values[:_NC], sub, values[-1]))


def load_charge(s: Executor, charge_id: int) -> ChargeRow | None:
    """The charge with its subscription and merchant, in one SELECT; None when it does not exist."""
    row = _LOAD.first(s, {"p_charge": charge_id})
    return None if row is None else _row(row)


# --- the lease -------------------------------------------------------------------------------

_TAKE_LOCK = Prepared(
    update(SUBSCRIPTIONS)
    .where(SUBSCRIPTIONS.c.id == (select(CHARGES.c.subscription_id)
                                  .where(CHARGES.c.id == _p("p_charge"),
                                         CHARGES.c.status.not_in([literal_column(f"'{s}'") for s in FINAL]))
                                  .scalar_subquery()),
           or_(SUBSCRIPTIONS.c.lock_until.is_(None), SUBSCRIPTIONS.c.lock_until < _p("p_now", True),
               SUBSCRIPTIONS.c.lock_owner == _p("p_owner")))
    .values(lock_owner=_p("p_owner"), lock_until=_p("p_until", True)))
_OWN_CHARGE = Prepared(update(CHARGES).where(CHARGES.c.id == _p("p_charge"))
                       .values(lease_owner=_p("p_owner"), lease_until=_p("p_until", True)))
_OWNED_CHARGE = update(CHARGES).where(CHARGES.c.id == _p("p_charge"), CHARGES.c.lease_owner == _p("p_owner"))
_RENEW_CHARGE = Prepared(_OWNED_CHARGE.values(lease_until=_p("p_until", True)))
_RENEW_LOCK_STMT = (update(SUBSCRIPTIONS)
                    .where(SUBSCRIPTIONS.c.id == _p("p_sub"), SUBSCRIPTIONS.c.lock_owner == _p("p_owner"))
                    .values(lock_until=_p("p_until", True)))
_RENEW_LOCK = Prepared(_RENEW_LOCK_STMT)
_RENEW_LOCK_STATUS = Prepared(_RENEW_LOCK_STMT.returning(SUBSCRIPTIONS.c.status))
_RELEASE_CHARGE = Prepared(
    _OWNED_CHARGE.values(lease_owner=None,
            lease_until=case((CHARGES.c.status.in_([literal_column(f"'{s}'") for s in SETTLED]), None),
                             else_=func.coalesce(_p("p_resume", True), CHARGES.c.lease_until))))
_RELEASE_LOCK_STMT = (update(SUBSCRIPTIONS)
                      .where(SUBSCRIPTIONS.c.id == _p("p_sub"), SUBSCRIPTIONS.c.lock_owner == _p("p_owner"))
                      .values(lock_owner=None, lock_until=None))
_RELEASE_LOCK = Prepared(_RELEASE_LOCK_STMT)
_RELEASE_LOCK_STATUS = Prepared(_RELEASE_LOCK_STMT.returning(SUBSCRIPTIONS.c.status))
_SUB_STATUS = Prepared(select(SUBSCRIPTIONS.c.status).where(SUBSCRIPTIONS.c.id == _p("p_sub")))
_ACTUAL = Prepared(select(CHARGES.c.status, CHARGES.c.lease_owner).where(CHARGES.c.id == _p("p_charge")))


def take_lease(s: Executor, charge_id: int, owner: str, now: datetime, lease: timedelta) -> ChargeRow | None:
    """:func:`acquire_lease` inside the caller's transaction (which the run's first transition
    may then share)."""
    until = now + lease
    got = _TAKE_LOCK.rowcount(s, {"p_charge": charge_id, "p_now": now, "p_owner": owner, "p_until": until})
    if not got:
        charge = load_charge(s, charge_id)
        if charge is None:
            log.error("charge %s does not exist", charge_id, extra={"charge_id": charge_id})
        elif charge.status in FINAL:
            return charge  # nothing to do; no lease needed
        else:
            log.info("charge %s is busy (another run holds its registration)", charge_id)
        return None
    # From here on only this run's transitions can move the charge (a run that held it before
    # and overstayed finds lease_owner changed and stops); so the row read next is stable.
    _OWN_CHARGE.execute(s, {"p_charge": charge_id, "p_owner": owner, "p_until": until})
    charge = load_charge(s, charge_id)
    assert charge is not None  # the lock above found it
    return charge


def acquire_lease(sessions: sessionmaker[Session], charge_id: int, owner: str, now: datetime,
                  lease: timedelta) -> ChargeRow | None:
    """Take the charge's subscription lease for ``owner`` and own the charge; the charge (with
    its subscription and merchant), or None when it does not exist or is busy."""
    with sessions.begin() as s:
        return take_lease(s, charge_id, owner, now, lease)


def older_open_charge(sessions: sessionmaker[Session] | Executor, charge: ChargeRow | Charge) -> int | None:
    """An older cycle of the same subscription that is not final and not surfaced to a human
    (a held charge has alerted the merchant; a surfaced one a human): cycles of one
    registration run oldest first, so the caller must wait for it."""
    query = (select(_OLDER.c.id)
             .where(_OLDER.c.subscription_id == charge.subscription_id, _OLDER.c.cycle_at < charge.cycle_at,
                    _OLDER.c.status.in_(WAITED_FOR), _OLDER.c.surfaced_at.is_(None))
             .order_by(_OLDER.c.cycle_at).limit(1))
    if isinstance(sessions, sessionmaker):
        with sessions() as s:
            return s.scalar(query)
    return cast(int | None, sessions.execute(query).scalar())


def last_approval_at(sessions: sessionmaker[Session] | Executor, charge: ChargeRow | Charge,
                     unrecorded: Iterable[datetime] = ()) -> datetime | None:
    """When this charge's latest approval call ended (as the engine's clock recorded it, or
    ``unrecorded``: calls whose rows are not written yet), or the charge entered ``approving``
    if that is later (a run may have died mid-call before recording it): NAVER may still be
    processing a request sent around then."""
    query = select(func.max(ATTEMPTS.c.created_at)).where(ATTEMPTS.c.charge_id == charge.id,
                                                          ATTEMPTS.c.kind == "approve")
    if isinstance(sessions, sessionmaker):
        with sessions() as s:
            recorded: datetime | None = s.scalar(query)
    else:
        recorded = sessions.execute(query).scalar()
    moments = [m for m in (recorded, *unrecorded) if m is not None]
    if charge.status == CS.APPROVING and charge.updated_at is not None:
        moments.append(charge.updated_at)
    return max(moments) if moments else None


def later_success(session: Executor, charge: ChargeRow | Charge) -> int | None:
    """A later cycle of the same subscription that succeeded (its registration works)."""
    return cast(int | None, session.execute(select(CHARGES.c.id).where(
        CHARGES.c.subscription_id == charge.subscription_id, CHARGES.c.cycle_at > charge.cycle_at,
        CHARGES.c.status == CS.SUCCEEDED).limit(1)).scalar())


def renew(s: Executor, charge: ChargeRow | Charge, owner: str, now: datetime, lease: timedelta) -> bool:
    """Extend the run's leases; False when the run no longer owns the charge."""
    owned = renew_charge(s, charge.id, owner, now + lease)
    if owned:
        _RENEW_LOCK.execute(s, {"p_sub": charge.subscription_id, "p_owner": owner, "p_until": now + lease})
    return owned


def renew_lock(s: Executor, subscription_id: int, owner: str, until: datetime) -> str | None:
    """Extend the subscription's lock held by ``owner`` and read its status in one statement
    (the status as committed now, whoever holds the lock); None when the row is gone."""
    status = _RENEW_LOCK_STATUS.scalar(s, {"p_sub": subscription_id, "p_owner": owner, "p_until": until})
    if status is None:  # not (or no longer) ours: still read what it says
        status = _SUB_STATUS.scalar(s, {"p_sub": subscription_id})
    return cast(str | None, status)


def release(s: Executor, charge_id: int, subscription_id: int, owner: str,
            resume_at: datetime | None = None) -> None:
    """:func:`release_lease` inside the caller's transaction."""
    _RELEASE_CHARGE.execute(s, {"p_charge": charge_id, "p_owner": owner, "p_resume": resume_at})
    _RELEASE_LOCK.execute(s, {"p_sub": subscription_id, "p_owner": owner})


def release_lease(sessions: sessionmaker[Session], charge: ChargeRow | Charge, owner: str,
                  resume_at: datetime | None = None) -> None:
    """Give the leases back (only what ``owner`` still holds).

    A settled charge (waiting for ``next_attempt_at``, held, or final) is left for the walk to
    claim when it is due. An in-flight one keeps ``lease_until`` (or gets ``resume_at``: a
    backoff), after which the walk takes it again.
    """
    with sessions.begin() as s:
        release(s, charge.id, charge.subscription_id, owner, resume_at)


def subscription_status(sessions: sessionmaker[Session], subscription_id: int) -> str | None:
    """The subscription's status as committed now (cancel wins: read before each NAVER call)."""
    with sessions() as s:
        return s.scalar(select(SUBSCRIPTIONS.c.status).where(SUBSCRIPTIONS.c.id == subscription_id))


# --- compare-and-set -------------------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def _cas_statement(sources: tuple[str, ...], target: str, keys: tuple[str, ...], owned: bool,
                   via: str | None) -> Prepared:
    """The compare-and-set UPDATE for one kind of transition, built once: values are bound."""
    conditions = [CHARGES.c.id == _p("p_charge"),
                  CHARGES.c.status.in_([literal_column(f"'{s}'") for s in sources])]
    if owned:
        conditions.append(CHARGES.c.lease_owner == _p("p_owner"))
    values: dict[str, Any] = {name: bindparam("v_" + name, type_=CHARGES.c[name].type) for name in keys}
    # Unsettled since when: kept across unknown <-> approving <-> held, for surfacing (a step
    # through a settled status, ``via``, starts the count again).
    if target not in UNSETTLED:
        values["stuck_since"] = None
    elif via is not None and via not in UNSETTLED:
        values["stuck_since"] = _p("p_now", True)
    else:
        values["stuck_since"] = func.coalesce(CHARGES.c.stuck_since, _p("p_now", True))
    prev = CHARGES.c.status if via is None else literal_column(f"'{via}'")
    return Prepared(update(CHARGES).where(and_(*conditions))
                    .values(status=literal_column(f"'{target}'"), prev_status=prev,
                            updated_at=_p("p_now", True), **values)
                    .returning(CHARGES.c.prev_status))


def trail_text(trail: Sequence[tuple[str, str]]) -> str:
    """``pending -> reserving -> reserved``: a run's steps as one path (a step that does not
    start where the previous one ended starts a new segment after ``;``)."""
    segments: list[list[str]] = []
    for before, after in trail:
        if segments and segments[-1][-1] == before:
            segments[-1].append(after)
        else:
            segments.append([before, after])
    return "; ".join(" -> ".join(segment) for segment in segments)


def compare_and_set(s: Executor, charge: ChargeRow | Charge, sources: Iterable[CS], target: CS,
                    now: datetime, *, owner: str | None, lease: timedelta | None = None,
                    release_leases: bool = False, lock: bool = True, via: CS | None = None,
                    trail: list[tuple[str, str]] | None = None, **values: Any) -> bool:
    """Move ``charge`` to ``target`` only if it is still in ``sources`` and (with ``owner``)
    still owned by this run; whether it moved. Raises :class:`LeaseLost` when another run
    owns the charge. With ``lease``, the run's lease is renewed in the same statement (and,
    with ``lock``, the subscription's lock right after); with ``release_leases`` (a final
    target) both are given back instead, as :func:`release_lease` would after the run.

    ``via``: two transitions in one statement, ``source -> via -> target`` (one source): the
    row ends exactly as the two compare-and-sets in one transaction would leave it
    (``prev_status`` is ``via``), and both are logged.

    ``trail``: the run's list of ``(from, to)`` steps; a move is appended there (and logged at
    DEBUG) instead of one INFO line per step, for the run to log its whole path in one line."""
    source_values = tuple(c.value for c in sources)
    assert via is None or len(source_values) == 1, "a two-step transition starts from one status"
    if release_leases and owner is not None:
        values["lease_owner"] = None
        values["lease_until"] = None
    elif lease is not None:
        values.setdefault("lease_until", now + lease)
    unsettled = target in UNSETTLED_CHARGE_STATUSES
    restarts = via is not None and via not in UNSETTLED_CHARGE_STATUSES  # stuck_since starts again
    if not unsettled or restarts:
        values.setdefault("surfaced_at", None)
    params = {"p_charge": charge.id, "p_owner": owner, "p_now": now}
    via_value = None if via is None else via.value
    if any(isinstance(value, ClauseElement) for value in values.values()):  # built for this call
        statement = _cas_statement(source_values, target.value, (), owner is not None, via_value).statement
        found = s.execute(cast(Update, statement).values(**values), params).first()
        row = None if found is None else tuple(found)
    else:
        prepared = _cas_statement(source_values, target.value, tuple(values), owner is not None, via_value)
        params.update({"v_" + name: value for name, value in values.items()})
        row = prepared.first(s, params)
    if row is not None:
        prev_status = row[0]
        steps = ([(source_values[0], via.value)] if via is not None else []) + [(prev_status, target.value)]
        if trail is None:
            for before, after in steps:
                log.info("charge %s: %s -> %s", charge.id, before, after)
        else:
            trail.extend(steps)
            log.debug("charge %s: %s", charge.id, steps)
        charge.status, charge.updated_at, charge.prev_status = target.value, now, prev_status
        if not unsettled:
            charge.stuck_since = None
        elif restarts or charge.stuck_since is None:
            charge.stuck_since = now
        for name, value in values.items():
            if not isinstance(value, ClauseElement):  # keep the in-memory row true to the row
                setattr(charge, name, value)
        if owner is not None and lock:
            if release_leases:  # (and the subscription's status as of now, for notifications)
                status = _RELEASE_LOCK_STATUS.scalar(s, {"p_sub": charge.subscription_id, "p_owner": owner})
                if status is not None and isinstance(charge, ChargeRow):
                    charge.subscription.status = status
            elif lease is not None:
                _RENEW_LOCK.execute(s, {"p_sub": charge.subscription_id, "p_owner": owner,
                                        "p_until": now + lease})
        return True
    actual = _ACTUAL.first(s, {"p_charge": charge.id})
    if actual is not None and owner is not None and actual[1] != owner:
        log.warning("charge %s: run %s lost its lease to %s; stopping without writing",
                    charge.id, owner, actual[1])
        raise LeaseLost(charge.id)
    log.info("charge %s: not moved to %s, it is %s now", charge.id, target.value,
             actual[0] if actual else "gone")
    return False


@functools.lru_cache(maxsize=16)
def _insert_attempts(keys: tuple[str, ...]) -> Prepared:
    return Prepared(ATTEMPTS.insert(), column_keys=keys)


def insert_attempts(s: Executor, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``charge_attempts`` rows (values from :func:`worker.recording.attempt_values`)."""
    if not rows:
        return
    keys = tuple(rows[0])
    if any(tuple(row) != keys for row in rows):  # not one shape: the ordinary way
        s.execute(ATTEMPTS.insert(), list(rows))
        return
    _insert_attempts(keys).execute(s, rows[0] if len(rows) == 1 else rows)


_NOTE = Prepared(_OWNED_CHARGE.values(last_code=_p("p_code"), last_message=_p("p_message")))
_STALL = Prepared(_OWNED_CHARGE.values(backoff_count=CHARGES.c.backoff_count + 1))
_WAIT = Prepared(_OWNED_CHARGE.values(next_attempt_at=_p("p_at", True)))


def renew_charge(s: Executor, charge_id: int, owner: str, until: datetime) -> bool:
    """Extend the run's lease on the charge; False when the run no longer owns it."""
    return bool(_RENEW_CHARGE.rowcount(s, {"p_charge": charge_id, "p_owner": owner, "p_until": until}))


def note_result(s: Executor, charge_id: int, owner: str, code: str | None, message: str) -> bool:
    """Keep the last NAVER answer on an owned charge that stays where it is; whether owned."""
    return bool(_NOTE.rowcount(s, {"p_charge": charge_id, "p_owner": owner, "p_code": code,
                                   "p_message": message}))


def count_stall(s: Executor, charge_id: int, owner: str) -> None:
    """One more run that NAVER did not settle (the next backoff grows)."""
    _STALL.execute(s, {"p_charge": charge_id, "p_owner": owner})


def wait_for_older(s: Executor, charge_id: int, owner: str, at: datetime) -> None:
    """A newer cycle looks at the older one again at ``at``."""
    _WAIT.execute(s, {"p_charge": charge_id, "p_owner": owner, "p_at": at})
