"""Per-process resources of a worker: one engine, one session factory, one client per merchant.

Built lazily on first use in each (forked) worker process, never at import time, so the
prefork pool does not share sockets across processes.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass, field, replace

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from models import make_engine, make_session_factory, utcnow
from worker.charge_store import MerchantSettings
from worker.charging import ChargeEngine
from worker.naverpay.client import NaverPayClient
from worker.naverpay.config import NaverPayConfig
from worker.notify import EmailSender, Sender, WebhookSender
from worker.ratelimit import limiter_from_env
from worker.refunds import RefundEngine
from worker.settings import Settings


def merchant_config(base: NaverPayConfig, merchant: MerchantSettings) -> NaverPayConfig:
    """The NAVER Pay config of ``merchant``: its columns override the environment's values.

    The chain id is optional (NAVER issues one to group-type merchants only) and belongs to
    the credentials it was issued with: a merchant row with its own ``client_id`` sends its
    own ``chain_id`` and none when that is NULL, never the environment's (another merchant's);
    a row that uses the environment's client id inherits the environment's chain ids unless
    it sets ``chain_id``.
    """
    secret = base.client_secret
    if merchant.client_secret_env:
        secret = os.environ.get(merchant.client_secret_env, "")
        if not secret:
            raise ValueError(f"merchant {merchant.id}: environment variable "
                             f"{merchant.client_secret_env} (client_secret_env) is not set")
    own_chain = (merchant.chain_id or "").strip() or None
    if merchant.client_id:  # its own NAVER merchant: only its own chain id, if any
        chain_id, onetime_chain_id = own_chain, None
    else:
        chain_id, onetime_chain_id = own_chain or base.chain_id, base.onetime_chain_id
    # The environment's one-time partner id belongs with the environment's partner id: a row
    # naming its own partner id (or its own NAVER merchant) uses that for one-time APIs too.
    own_partner = bool(merchant.partner_id or merchant.client_id)
    onetime_partner_id = None if own_partner else base.onetime_partner_id
    return replace(base, api_base=merchant.api_base or base.api_base,
                   partner_id=merchant.partner_id or base.partner_id,
                   client_id=merchant.client_id or base.client_id,
                   chain_id=chain_id, onetime_chain_id=onetime_chain_id,
                   onetime_partner_id=onetime_partner_id, client_secret=secret)


@dataclass
class Runtime:
    """The worker process's long-lived objects."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    _clients: dict[tuple[object, ...], NaverPayClient] = field(default_factory=dict)
    # The merchant's columns (and its secret's current value) -> its client: the per-call
    # lookup is one dict get; a changed column or secret is a new key, so a credentials fix
    # takes effect on the next run without a restart.
    _by_columns: dict[tuple[object, ...], NaverPayClient] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _charge_engine: ChargeEngine | None = None
    _refund_engine: RefundEngine | None = None

    def client_for(self, merchant: MerchantSettings) -> NaverPayClient:
        """One client per distinct merchant configuration, created once."""
        env = merchant.client_secret_env
        columns = (merchant.id, merchant.api_base, merchant.partner_id, merchant.client_id,
                   merchant.chain_id, env, os.environ.get(env) if env else None)
        client = self._by_columns.get(columns)
        if client is not None:
            return client
        config = merchant_config(self.settings.naverpay, merchant)
        key = (config.api_base, config.partner_id, config.client_id, config.chain_id,
               config.onetime_chain_id, config.onetime_partner_id, config.client_secret)
        with self._lock:
            if key not in self._clients:
                from worker.metrics import observe_naverpay
                self._clients[key] = NaverPayClient(config, observer=observe_naverpay)
            self._by_columns[columns] = self._clients[key]
            return self._clients[key]

    def charge_engine(self) -> ChargeEngine:
        """The charge state machine's collaborators (one per process: its retry strategies
        are built once)."""
        if self._charge_engine is None:
            self._charge_engine = ChargeEngine(sessions=self.sessions, client_for=self.client_for,
                                               clock=utcnow, sleep=time.sleep, lease=self.settings.lease,
                                               limiter=limiter_from_env())
        return self._charge_engine

    def refund_engine(self) -> RefundEngine:
        """The refund state machine's collaborators (issue 9), one per process."""
        if self._refund_engine is None:
            self._refund_engine = RefundEngine(sessions=self.sessions, client_for=self.client_for,
                                               clock=utcnow, sleep=time.sleep, lease=self.settings.lease)
        return self._refund_engine

    @functools.cached_property
    def senders(self) -> dict[str, Sender]:
        """The notification channels (one HTTP client per process)."""
        s = self.settings
        return {"webhook": WebhookSender(httpx.Client(timeout=10), utcnow),
                "email": EmailSender(s.smtp_host, s.smtp_port, s.smtp_from)}


@functools.cache
def runtime() -> Runtime:
    """This process's runtime (built on first use)."""
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    return Runtime(settings=settings, engine=engine, sessions=make_session_factory(engine))
