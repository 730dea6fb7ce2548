"""Settings of the NAVER Pay client: one frozen object, built from the environment once.

The client secret is a field like the others but is kept out of ``repr()``/``str()`` so that a
config object can be logged or shown in a traceback without leaking it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["NaverPayConfig"]


@dataclass(frozen=True)
class NaverPayConfig:
    """Where NAVER Pay lives, who we are to it, and how long we wait for it.

    Defaults point at the local sandbox with its built-in credentials. ``partner_id`` and
    ``chain_id`` are the recurrent ones; one-time payments (``v2.2/apply/payment``, and
    cancels of one-time payments) use ``onetime_partner_id`` and ``onetime_chain_id`` when
    set, else the recurrent ones (NAVER issues separate partner ids, and separate chain ids,
    for one-time and recurrent payments: docs/naverpay-api.md, first tables).

    Chain ids are optional: NAVER issues them to group-type merchants only ("Chain ID는 그룹
    타입 가맹점에만 발급", integration guide 2-2). ``None`` (the default) sends no
    ``X-NaverPay-Chain-Id`` header at all; an empty string is refused rather than sent.
    """

    api_base: str = "http://127.0.0.1:8055"
    partner_id: str = "naverpay-partner"
    client_id: str = "sandbox-client-id"
    client_secret: str = field(default="sandbox-client-secret", repr=False)
    chain_id: str | None = None
    onetime_chain_id: str | None = None
    onetime_partner_id: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    # NAVER advises 60 s for approval and cancel: they may take long, and an answer we stop
    # waiting for still happens on NAVER's side (the outcome then has to be resolved).
    approval_timeout: float = 60.0
    max_body_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        if not self.api_base.startswith(("http://", "https://")):
            raise ValueError(f"api_base must start with http:// or https://, got {self.api_base!r}")
        # A trailing slash would produce '//' in every URL; normalise instead of failing.
        object.__setattr__(self, "api_base", self.api_base.rstrip("/"))
        for name in ("partner_id", "client_id", "client_secret"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        for name in ("chain_id", "onetime_chain_id", "onetime_partner_id"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"{name} must be None (not set) or a non-empty id")
        for name in ("connect_timeout", "read_timeout", "approval_timeout"):
            _check_seconds(name, getattr(self, name))
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")

    @property
    def effective_onetime_chain_id(self) -> str | None:
        """The chain id sent with one-time payment APIs (None: no header)."""
        return self.onetime_chain_id or self.chain_id

    @property
    def effective_onetime_partner_id(self) -> str:
        """The partner id in the URL of one-time payment APIs."""
        return self.onetime_partner_id or self.partner_id

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> NaverPayConfig:
        """Build the config from ``NAVERPAY_*`` variables; unset or empty ones keep defaults."""
        base = cls()

        def text(var: str, default: str) -> str:
            return environ.get(var) or default

        def seconds(var: str, default: float) -> float:
            raw = environ.get(var)
            return _parse_seconds(var, raw) if raw else default

        return cls(
            api_base=text("NAVERPAY_API_BASE", base.api_base),
            partner_id=text("NAVERPAY_PARTNER_ID", base.partner_id),
            client_id=text("NAVERPAY_CLIENT_ID", base.client_id),
            client_secret=text("NAVERPAY_CLIENT_SECRET", base.client_secret),
            chain_id=_optional(environ.get("NAVERPAY_CHAIN_ID")),
            onetime_chain_id=_optional(environ.get("NAVERPAY_ONETIME_CHAIN_ID")),
            onetime_partner_id=_optional(environ.get("NAVERPAY_ONETIME_PARTNER_ID")),
            connect_timeout=seconds("NAVERPAY_CONNECT_TIMEOUT", base.connect_timeout),
            read_timeout=seconds("NAVERPAY_READ_TIMEOUT", base.read_timeout),
            approval_timeout=seconds("NAVERPAY_APPROVAL_TIMEOUT", base.approval_timeout),
        )


def _optional(text: str | None) -> str | None:
    """An optional id from the environment: unset, empty or blank means none."""
    if text is None:
        return None
    return text.strip() or None


def _parse_seconds(var: str, text: str) -> float:
    """A positive, finite number of seconds from an environment variable."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{var} must be a number of seconds, got {text!r}") from None
    _check_seconds(var, value, text)
    return value


def _check_seconds(name: str, value: float, shown: object = None) -> None:
    if not math.isfinite(value) or value <= 0:
        shown = value if shown is None else shown
        raise ValueError(f"{name} must be a positive number of seconds, got {shown!r}")
