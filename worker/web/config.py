"""The web app's settings, read once from the environment (README: Configuration).

- ``WEB_STATE_SECRET``: key that signs state tokens (16+ characters). Default: random per
  process; set it when several processes serve the app or tokens must survive a restart.
- ``WEB_STATE_TTL_SECONDS``: how long a started registration may take to come back (1800).
- ``WEB_PUBLIC_URL``: scheme and host NAVER sends the customer back to (default: the request's).
- ``NAVERPAY_SDK_URL``: NAVER's JavaScript SDK. Default: the sandbox's shim
  (``{NAVERPAY_API_BASE}/sdk/js/naverpay.min.js``) unless the API base is a naver.com host,
  then ``https://nsp.pay.naver.com/sdk/js/naverpay.min.js``.
- ``NAVERPAY_SDK_MODE``: the SDK's ``mode``: ``production`` for NAVER's production API hosts,
  else ``development``.
- ``WEB_DEMO``: ``0`` serves only ``returnUrl`` (no demo merchant pages). Default ``1``.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from worker.naverpay.config import NaverPayConfig

log = logging.getLogger(__name__)

NAVER_SDK_URL = "https://nsp.pay.naver.com/sdk/js/naverpay.min.js"
PRODUCTION_HOSTS = frozenset({"pay.paygate.naver.com", "apis.naver.com"})


@dataclass(frozen=True)
class WebSettings:
    """What the web app needs besides the database and the NAVER client."""

    secret: bytes = field(repr=False)
    client_id: str  # the SDK's clientId (public; the secret never reaches the browser)
    chain_id: str | None = None
    sdk_url: str = NAVER_SDK_URL
    sdk_mode: str = "development"
    state_ttl_seconds: int = 1800
    public_url: str | None = None
    demo: bool = True
    merchant_id: int = 1  # whose registrations the demo pages start

    @classmethod
    def from_env(cls, naverpay: NaverPayConfig, environ: Mapping[str, str] = os.environ) -> WebSettings:
        """Read ``WEB_*`` and ``NAVERPAY_SDK_*``; ValueError naming a bad value."""
        raw_secret = environ.get("WEB_STATE_SECRET", "")
        if raw_secret and len(raw_secret) < 16:
            raise ValueError("WEB_STATE_SECRET must be at least 16 characters")
        if not raw_secret:
            log.warning("WEB_STATE_SECRET is not set: state tokens are signed with a random key and "
                        "die with this process (set it in production)")
        secret = raw_secret.encode() if raw_secret else secrets.token_bytes(32)
        ttl_text = environ.get("WEB_STATE_TTL_SECONDS", "1800")
        if not ttl_text.isdigit() or int(ttl_text) < 60:
            raise ValueError(f"WEB_STATE_TTL_SECONDS={ttl_text!r} must be a whole number of seconds >= 60")
        host = urlsplit(naverpay.api_base).hostname or ""
        naver = host == "naver.com" or host.endswith(".naver.com")
        default_sdk = NAVER_SDK_URL if naver else naverpay.api_base.rstrip("/") + "/sdk/js/naverpay.min.js"
        mode = environ.get("NAVERPAY_SDK_MODE") or (
            "production" if host in PRODUCTION_HOSTS else "development")
        if mode not in ("development", "production"):
            raise ValueError(f"NAVERPAY_SDK_MODE={mode!r} must be development or production")
        public = environ.get("WEB_PUBLIC_URL") or None
        if public is not None and urlsplit(public).scheme not in ("http", "https"):
            raise ValueError(f"WEB_PUBLIC_URL={public!r} must start with http:// or https://")
        return cls(secret=secret, client_id=naverpay.client_id, chain_id=naverpay.chain_id,
                   sdk_url=environ.get("NAVERPAY_SDK_URL") or default_sdk, sdk_mode=mode,
                   state_ttl_seconds=int(ttl_text), public_url=public.rstrip("/") if public else None,
                   demo=environ.get("WEB_DEMO", "1") not in ("0", "false", "no", "off"))
