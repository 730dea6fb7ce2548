"""Sandbox options: one dataclass, settable at start (CLI, ``run(**options)``) and at run time.

Options are written in snake_case in Python and on the command line (``--reserve-window-seconds``)
and in camelCase over the control API (``POST /_sandbox/config {"reserveWindowSeconds": 5}``).
Every value is checked the same way in all three places; ``/_sandbox/reset`` restores the
options the process started with. The open questions of naverpay-api.md §5.5 are options here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_CHAIN_IDS = ("sandbox-chain-id", "sandbox-recurrent-chain-id")

CHOICES: Mapping[str, tuple[str, ...]] = {
    "bad_credentials": ("401", "InvalidMerchant"),
    "maintenance": ("off", "503", "MaintenanceOngoing"),
    "duplicate_merchant_pay_id": ("accept", "reject", "existing"),
    "settlement_basis": ("payment_date", "trade_confirm"),
    "point_basis": ("auto", "trade_confirm", "manual"),
}


@dataclass(slots=True)
class SandboxConfig:
    """Every switch of the simulator. Mutable on purpose: the control API edits it live."""

    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    chain_ids: tuple[str, ...] = DEFAULT_CHAIN_IDS
    require_chain_id: bool = False
    bad_credentials: str = "401"
    maintenance: str = "off"
    reserve_window_seconds: float = 600.0
    regist_window_seconds: float = 600.0
    onetime_window_seconds: float = 600.0
    min_amount: int = 10
    duplicate_merchant_pay_id: str = "accept"
    expired_registration_code: str = "Fail"
    store_non_final: bool = False
    idempotency_retention_seconds: float | None = None
    cancel_not_complete_rate: float = 0.0
    cancel_not_complete_next: int = 0
    cancel_not_complete_seconds: float = 5.0
    cancel_reflect_seconds: float = 0.0
    cancel_deadline_days: float | None = 365.0
    naverpoint_save: bool = True
    # The merchant's contract (NAVER's guide): purchase confirm is allowed when settlement or
    # points are based on 거래완료; point accrual when settlement is by payment date with manual
    # accrual. Anything else answers InvalidMerchantType.
    settlement_basis: str = "payment_date"
    point_basis: str = "auto"
    merchant_id: str = "sandbox-merchant"
    merchant_name: str = "네이버페이 샌드박스 상점"
    extra_response_fields: bool = False
    auto_register: bool = False


HELP: Mapping[str, str] = {
    "client_id": "accepted X-Naver-Client-Id",
    "client_secret": "accepted X-Naver-Client-Secret",
    "chain_ids": "accepted X-NaverPay-Chain-Id (repeat the option for several); a call that "
    "sends another one is InvalidMerchant",
    "require_chain_id": "refuse calls without X-NaverPay-Chain-Id (InvalidMerchant), as for a "
    "group-type merchant; off: the header is optional, as NAVER issues chain ids to group-type "
    "merchants only",
    "bad_credentials": "answer to a wrong id/secret: HTTP 401, or HTTP 200 code InvalidMerchant",
    "maintenance": "answer every API with HTTP 503 or HTTP 200 MaintenanceOngoing",
    "reserve_window_seconds": "recurrent reserve->approval window before TimeExpired",
    "regist_window_seconds": "time the user has in the registration window before it answers "
    "returnUrl with resultMessage=paymentTimeExpire",
    "onetime_window_seconds": "one-time authentication->approval window before TimeExpired",
    "min_amount": "smallest totalPayAmount in KRW (10 now; 100 before 2025)",
    "duplicate_merchant_pay_id": "a reserve repeating a merchantPayId: accept, reject "
    "(InvalidParameter) or return the existing paymentId",
    "expired_registration_code": "code for reserve/approval on an unknown or EXPIRED recurrentId",
    "store_non_final": "also store 5xx/MaintenanceOngoing/AlreadyOnGoing answers for idempotency",
    "idempotency_retention_seconds": "forget idempotency keys after this many seconds (None: never)",
    "cancel_not_complete_rate": "share of accepted cancels answered CancelNotComplete (0..1)",
    "cancel_not_complete_next": "the next N accepted cancels answer CancelNotComplete",
    "cancel_not_complete_seconds": "delay after which a CancelNotComplete cancel completes",
    "cancel_reflect_seconds": "lag before a successful cancel shows in history",
    "cancel_deadline_days": "days after approval when cancel answers CancelDeadlineExpired",
    "naverpoint_save": "allow v1/naverpoint-save at all (off: always InvalidMerchantType)",
    "settlement_basis": "the merchant's settlement basis: payment_date (결제일) or trade_confirm "
    "(거래완료; v1/purchase-confirm needed, once per approved payment)",
    "point_basis": "the merchant's point accrual basis: auto, trade_confirm (points on "
    "purchase confirm) or manual (v1/naverpoint-save, with payment_date settlement only)",
    "merchant_id": "merchantId in approval details",
    "merchant_name": "merchantName in approval details",
    "extra_response_fields": "add unknown members to answers (backward-compatibility tests)",
    "auto_register": "treat an unknown recurrentId at pay reserve as a VALID registration made in "
    "NAVER Pay's window (demos: subscriptions inserted with any recurrentId get charged)",
}


class ConfigError(ValueError):
    """An option name or value the sandbox does not accept."""


def camel(name: str) -> str:
    """``reserve_window_seconds`` -> ``reserveWindowSeconds``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


FIELDS = tuple(f.name for f in dataclasses.fields(SandboxConfig))
_BY_ANY_NAME = {**{n: n for n in FIELDS}, **{camel(n): n for n in FIELDS}, "chain_id": "chain_ids",
                "chainId": "chain_ids"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes", "on")
    raise ConfigError(f"expected a boolean, got {value!r}")


def _number(kind: type, minimum: float, optional: bool = False) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool):
            raise ConfigError(f"expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"expected a number, got {value!r}") from exc
        if number < minimum:
            raise ConfigError(f"expected at least {minimum}, got {value!r}")
        return number

    return convert


def _text(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
        raise ConfigError(f"expected a non-empty string, got {value!r}")
    return str(value)


def _texts(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"expected a string or a non-empty list of strings, got {value!r}")
    return tuple(_text(item) for item in items)


def _rate(value: Any) -> float:
    rate = _number(float, 0.0)(value)
    if rate > 1:
        raise ConfigError(f"expected a share between 0 and 1, got {value!r}")
    return float(rate)


def _maintenance(value: Any) -> str:
    if isinstance(value, bool) or value is None:  # switch on/off with true/false too
        return "MaintenanceOngoing" if value else "off"
    return str(value)


_CONVERT: Mapping[str, Callable[[Any], Any]] = {
    "chain_ids": _texts,
    "bad_credentials": str,
    "settlement_basis": str,
    "point_basis": str,
    "maintenance": _maintenance,
    "reserve_window_seconds": _number(float, 0.0),
    "regist_window_seconds": _number(float, 0.0),
    "onetime_window_seconds": _number(float, 0.0),
    "min_amount": _number(int, 0),
    "require_chain_id": _bool,
    "store_non_final": _bool,
    "idempotency_retention_seconds": _number(float, 0.0, optional=True),
    "cancel_not_complete_rate": _rate,
    "cancel_not_complete_next": _number(int, 0),
    "cancel_not_complete_seconds": _number(float, 0.0),
    "cancel_reflect_seconds": _number(float, 0.0),
    "cancel_deadline_days": _number(float, 0.0, optional=True),
    "naverpoint_save": _bool,
    "extra_response_fields": _bool,
    "auto_register": _bool,
}


def _convert(name: str, value: Any) -> Any:
    convert: Callable[[Any], Any] = _CONVERT.get(name, _text)
    converted = convert(value)
    allowed = CHOICES.get(name)
    if allowed is not None and converted not in allowed:
        raise ConfigError(f"{camel(name)} must be one of {', '.join(allowed)}, got {value!r}")
    return converted


def apply(config: SandboxConfig, changes: Mapping[str, Any]) -> None:
    """Check every change first, then set them all (a bad value changes nothing)."""
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        name = _BY_ANY_NAME.get(key)
        if name is None:
            raise ConfigError(f"unknown option {key!r}")
        try:
            checked[name] = _convert(name, value)
        except ConfigError as exc:
            raise ConfigError(f"{camel(name)}: {exc}") from exc
    for name, value in checked.items():
        setattr(config, name, value)


def from_options(options: Mapping[str, Any]) -> SandboxConfig:
    """A config from keyword options (snake_case or camelCase); unknown names are errors."""
    config = SandboxConfig()
    apply(config, options)
    return config


def copy(config: SandboxConfig) -> SandboxConfig:
    """An independent copy (the start options are kept aside for ``/_sandbox/reset``)."""
    return dataclasses.replace(config)


def to_json(config: SandboxConfig) -> dict[str, Any]:
    """The options in camelCase, as ``GET /_sandbox/config`` shows them. The client secret is
    never shown: ``npay-billing sandbox`` may have taken a real one from the environment."""
    values = {camel(name): getattr(config, name) for name in FIELDS}
    values["chainIds"] = list(config.chain_ids)
    values["clientSecret"] = "[redacted]"
    return values


# --- command-line options: one definition for `python -m sandbox` and `npay-billing sandbox` ---

SERVER_DEFAULTS: Mapping[str, Any] = {"host": "127.0.0.1", "port": 8055, "log_level": "warning"}
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True, slots=True)
class Option:
    """One command-line option, in a form any parser (argparse, click) can be built from.

    ``kind``: ``switch`` (``--x/--no-x``), ``choice``, ``int``, ``float``, ``text`` or
    ``texts`` (repeatable). ``name`` is the keyword of ``sandbox.server.run``; the server
    options (host, port, log level) come first, then every field of :class:`SandboxConfig`.
    """

    name: str
    flag: str
    kind: str
    help: str
    default: Any
    choices: tuple[str, ...] = ()
    metavar: str = ""


def _kind(name: str, default: Any) -> tuple[str, str]:
    if name == "chain_ids":
        return "texts", "ID"
    if isinstance(default, bool):
        return "switch", ""
    if name in CHOICES:
        return "choice", ""
    if isinstance(default, int):
        return "int", "N"
    if isinstance(default, float) or default is None:
        return "float", "N"
    return "text", "CODE" if name.endswith("_code") else "TEXT"


def _config_option(field: dataclasses.Field[Any]) -> Option:
    kind, metavar = _kind(field.name, field.default)
    flag = "--chain-id" if field.name == "chain_ids" else "--" + field.name.replace("_", "-")
    shown = ", ".join(field.default) if isinstance(field.default, tuple) else field.default
    return Option(field.name, flag, kind, f"{HELP[field.name]} (default: {shown})", field.default,
                  CHOICES.get(field.name, ()), metavar)


def options() -> tuple[Option, ...]:
    """Every command-line option of the sandbox, server options first."""
    server = (
        Option("host", "--host", "text", "address to listen on (default: 127.0.0.1)", "127.0.0.1",
               metavar="HOST"),
        Option("port", "--port", "int", "port to listen on (default: 8055)", 8055, metavar="PORT"),
        Option("log_level", "--log-level", "choice",
               "uvicorn log level; the access log is always off (default: warning)", "warning",
               LOG_LEVELS),
    )
    return server + tuple(_config_option(field) for field in dataclasses.fields(SandboxConfig))
