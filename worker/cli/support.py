"""What every CLI command shares: errors by exit code, the database handle, row lookups.

Exit codes: 0 done; 1 the thing asked for does not exist or was refused (an unknown id, a
retry of a paid charge); 2 the setup or the input is wrong (a database not migrated, a broker
that cannot be reached, an invalid cron). Expected errors are :class:`CliError` subclasses, so
click prints ``Error: <what to do>`` and never a traceback.

Heavy imports (SQLAlchemy, the models) happen inside functions: ``npay-billing --help`` stays
fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from models import Charge, Subscription

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """An expected failure; the message says what to do. Exit code 1."""

    exit_code = 1


class NotFound(CliError):
    """An id or recurrentId that matches no row."""


class Refused(CliError):
    """The operation is not allowed in the row's current state."""


class SetupError(CliError):
    """The database, broker or sandbox is not ready, or the input is invalid. Exit code 2."""

    exit_code = 2


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    userinfo = f"{parts.username or ''}:***@"
    return urlunsplit(parts._replace(netloc=userinfo + host))


@dataclass
class Env:
    """The database the CLI talks to; the engine is made on first use, checked once."""

    database_url: str
    _engine: Engine | None = field(default=None, repr=False)
    _sessions: sessionmaker[Session] | None = field(default=None, repr=False)

    @property
    def shown_url(self) -> str:
        """The database URL without its password."""
        return redact(self.database_url)

    def engine(self) -> Engine:
        """The engine (no migration check)."""
        if self._engine is None:
            from models import make_engine

            self._engine = make_engine(self.database_url)
        return self._engine

    def revision(self) -> tuple[str | None, bool]:
        """(current revision, up to date?), or a SetupError if the database is unreachable."""
        from sqlalchemy.exc import SQLAlchemyError

        from models.migrate import current_revision, head_revision

        try:
            current = current_revision(self.engine())
        except (SQLAlchemyError, ImportError) as exc:  # ImportError: no driver for that URL
            first_line = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise SetupError(
                f"cannot open the database at {self.shown_url}: {first_line}; check DATABASE_URL "
                "(or --database-url) and that the database server is running") from None
        return current, current == head_revision()

    def sessions(self) -> sessionmaker[Session]:
        """A session factory for a database that has every migration applied."""
        if self._sessions is None:
            _, up_to_date = self.revision()
            if not up_to_date:
                raise SetupError(f"the database at {self.shown_url} is not migrated; "
                                 "run `npay-billing db upgrade`")
            from models import make_session_factory

            self._sessions = make_session_factory(self.engine())
        return self._sessions

    def close(self) -> None:
        """Release the engine's connections."""
        if self._engine is not None:
            self._engine.dispose()


def current_env() -> Env:
    """The :class:`Env` of the running command."""
    env = click.get_current_context().find_object(Env)
    assert env is not None, "commands run under the npay-billing group"
    return env


def json_option(fn: F) -> F:
    """The ``--json`` flag, passed as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON (times in ISO-8601 UTC).")(fn)


def find_subscription(session: Session, key: str) -> Subscription:
    """A subscription by id or recurrentId, or NotFound saying where to look."""
    from sqlalchemy import select

    from models import Subscription

    sub = session.get(Subscription, int(key)) if key.isdigit() else None
    if sub is None:
        sub = session.scalars(select(Subscription).where(Subscription.recurrent_id == key)).first()
    if sub is None:
        raise NotFound(f"no subscription with id or recurrentId {key!r}; "
                       "see `npay-billing subscriptions list`")
    return sub


def find_charge(session: Session, key: str) -> Charge:
    """A charge by id, or NotFound saying where to look."""
    from models import Charge

    charge = session.get(Charge, int(key)) if key.isdigit() else None
    if charge is None:
        raise NotFound(f"no charge with id {key!r}; see `npay-billing charges list`")
    return charge
