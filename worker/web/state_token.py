"""The signed, expiring state token that carries a registration from its start to ``returnUrl``.

The merchant's server decides what is being subscribed to (plan, amount, cron, customer) when
the flow starts, and NAVER brings the customer back to ``returnUrl`` some minutes later with
nothing but its own result parameters. What our server decided travels in the ``returnUrl``'s
query string as this token::

    v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload))>

The payload is readable by the customer but cannot be changed without the secret; it holds an
expiry (``exp``, Unix seconds) and a random ``nonce`` (one start of the flow: the database
allows one registration per nonce). :func:`verify` checks the signature in constant time
before it parses anything, then the expiry; a token signed with another secret, edited,
truncated or expired raises :class:`StateTokenError` saying which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

VERSION = "v1"


class StateTokenError(ValueError):
    """A token that must not be trusted; ``reason`` is ``malformed``, ``forged`` or ``expired``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def new_nonce() -> str:
    """A fresh random nonce (one start of the flow)."""
    return secrets.token_hex(16)


def sign(secret: bytes, payload: Mapping[str, Any], *, now: datetime, ttl_seconds: int) -> str:
    """A token for ``payload`` (JSON-serialisable), valid for ``ttl_seconds`` after ``now``.

    ``exp`` and, unless given, ``nonce`` are added to the payload.
    """
    if len(secret) < 16:
        raise ValueError("the state token secret must be at least 16 bytes")
    body = {**payload, "exp": int(now.timestamp()) + ttl_seconds}
    body.setdefault("nonce", new_nonce())
    encoded = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signed = f"{VERSION}.{encoded}"
    return f"{signed}.{_signature(secret, signed)}"


def verify(secret: bytes, token: str, *, now: datetime) -> dict[str, Any]:
    """The payload of a token we signed and that has not expired; else StateTokenError."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1] or not parts[2]:
        raise StateTokenError("malformed", "the state token is not a v1 token")
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_signature(secret, signed), parts[2]):
        raise StateTokenError("forged", "the state token's signature does not match")
    try:
        payload = json.loads(_unb64(parts[1]).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:  # signed by us: cannot happen
        raise StateTokenError("malformed", "the state token's payload is unreadable") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise StateTokenError("malformed", "the state token's payload has no expiry")
    if now.timestamp() >= payload["exp"]:
        raise StateTokenError("expired", "the state token has expired")
    return payload
