"""Errors of the NAVER Pay client, grouped by what the caller should do next.

```
NaverPayError(Exception)        .api .code .message .naver_message .http_status .raw .body
│                               .replayed
├── TransientError              retry soon (same idempotency key): connect failure or timeout
│                               before the request was sent, HTTP 5xx/503/429 (cancel: 503, 429),
│                               MaintenanceOngoing; and ANY failure of a read-only call
│                               (list, history, cash-amount) outside the code table, incl.
│                               read timeouts and malformed answers: reading twice is harmless
├── DeclinedError               the merchant's retry policy decides: NotEnoughAccountBalance,
│                               OwnerAuthFail, FaultCheckOngoing, BankMaintenance, BankCheckTime,
│                               TimeExpired (reserve again), Fail at approval or reserve;
│                               ``customer_decline`` says whether the code is one of NAVER's
│                               known answers about the customer's means (unknown codes of
│                               other mutations are DeclinedError too, but not the customer's)
├── PermanentError              stop and flag: InvalidPaymentId (outside history), cancel
│   │                           rule violations (OverRemainAmount, RestAmountDiff,
│   │                           AlreadyCanceled, ...)
│   └── MerchantSideError       OUR fault, never the customer's: RequireParameter,
│       │                       InvalidParameter, RequireCondition, TimeConditionError,
│       │                       InvalidMerchantType, a 3xx/4xx answer without a NAVER code
│       │                       (a proxy, a WAF). Billing holds the work and alerts; it never
│       │                       consumes a customer's attempt or expires a registration
│       └── AuthenticationError HTTP 401, InvalidMerchant: credentials or chain id are wrong
└── UnknownOutcomeError         resolve through payment history before anything else: read
    │                           timeout or dropped connection AFTER a mutating request was
    │                           sent, AlreadyOnGoing, AlreadyComplete, unknown codes at
    │                           approval and cancel, an HTTP 5xx other than 503 on a cancel
    │                           (NAVER's guide: the refund may have been made)
    └── MalformedResponseError  a mutating call got an answer we cannot read: not JSON, an
                                HTML error page, no ``code``, truncated, over the size cap,
                                not an object, or a Success missing a required field
```

Read-only calls never raise ``UnknownOutcomeError``: the resolution path itself reads
history, and "resolve first" would send it in a circle. Their unreadable answers are
``TransientError``s that still say "malformed" in the message.

``CODE_TABLE`` is the one place that maps NAVER result codes to these classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

__all__ = [
    "ApiKind",
    "AuthenticationError",
    "CODE_TABLE",
    "CUSTOMER_DECLINE_CODES",
    "DeclinedError",
    "MalformedResponseError",
    "MerchantSideError",
    "NaverPayError",
    "PermanentError",
    "TransientError",
    "UnknownOutcomeError",
    "customer_decline",
    "error_class_for",
]

ApiKind = Literal["approval", "cancel", "mutation", "read"]
"""How an API is treated when it fails: approvals and cancels move money, other mutations
change state without moving money, reads change nothing."""

RAW_LIMIT: Final = 4096
"""Characters of the response text kept on an error (enough for any NAVER error envelope)."""


class NaverPayError(Exception):
    """Base of every error the client raises; carries what NAVER said, as far as it said it."""

    def __init__(
        self,
        message: str,
        *,
        api: str,
        code: str | None = None,
        http_status: int | None = None,
        raw: str | None = None,
        body: Mapping[str, Any] | None = None,
        naver_message: str | None = None,
        replayed: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message  # ours: which API, what went wrong, NAVER's text if any
        self.naver_message = naver_message  # NAVER's ``message`` member, verbatim
        self.api = api
        self.code = code
        self.http_status = http_status
        self.raw = raw[:RAW_LIMIT] if raw is not None else None
        self.body = body  # parsed ``body`` of the envelope, e.g. NAVER's rest amount
        self.replayed = replayed  # the answer came as an HTTP 409 idempotency replay

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(api={self.api!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, message={self.message!r})"
        )


class TransientError(NaverPayError):
    """Retry soon with the same idempotency key; nothing was done, or only reads were."""


class DeclinedError(NaverPayError):
    """NAVER refused the charge for a reason that may pass; the merchant's policy decides."""


class PermanentError(NaverPayError):
    """Sending the same request again will fail the same way; stop and flag it."""


class MerchantSideError(PermanentError):
    """Our request or our configuration is at fault (or a proxy in between): not the customer."""


class AuthenticationError(MerchantSideError):
    """Credentials or chain id are wrong (HTTP 401 or ``InvalidMerchant``)."""


class UnknownOutcomeError(NaverPayError):
    """The request may or may not have taken effect: resolve via history before acting."""


class MalformedResponseError(UnknownOutcomeError):
    """A mutating call got an unreadable answer, so whether it took effect is unknown."""


ANY: Final = "*"
_ErrorClass = type[NaverPayError]

# Keys are (api kind or ANY, code or ANY). Lookup order: exact, any kind, the kind's default
# for unknown codes, global default. NAVER adds codes without a version bump, so unknown
# codes are normal and their defaults below are chosen to be safe, never "success".
CODE_TABLE: Final[Mapping[tuple[str, str], _ErrorClass]] = {
    (ANY, "RequireParameter"): MerchantSideError,
    (ANY, "InvalidParameter"): MerchantSideError,
    (ANY, "RequireCondition"): MerchantSideError,
    (ANY, "TimeConditionError"): MerchantSideError,
    (ANY, "InvalidMerchant"): AuthenticationError,
    (ANY, "InvalidMerchantType"): MerchantSideError,
    (ANY, "MaintenanceOngoing"): TransientError,
    # The paymentId (or its approval window) is dead; a new reserve is the policy's call.
    (ANY, "TimeExpired"): DeclinedError,
    # Both mean "something already happened to this payment": only history can say what.
    (ANY, "AlreadyOnGoing"): UnknownOutcomeError,
    (ANY, "AlreadyComplete"): UnknownOutcomeError,
    (ANY, "OwnerAuthFail"): DeclinedError,
    (ANY, "BankMaintenance"): DeclinedError,
    (ANY, "NotEnoughAccountBalance"): DeclinedError,
    (ANY, "FaultCheckOngoing"): DeclinedError,
    # An hour-long bank window: longer than in-task retries, so the policy schedules it.
    (ANY, "BankCheckTime"): DeclinedError,
    (ANY, "InvalidPaymentId"): PermanentError,
    (ANY, "AlreadyCanceled"): PermanentError,
    (ANY, "OverRemainAmount"): PermanentError,
    # The earlier cancel must be reflected (or resolved) first; resending this one won't help.
    (ANY, "PreCancelNotComplete"): PermanentError,
    (ANY, "CancelDeadlineExpired"): PermanentError,
    (ANY, "TaxScopeAmtGreaterThanRemainError"): PermanentError,
    (ANY, "TaxScopeAmountError"): PermanentError,
    (ANY, "RestAmountDiff"): PermanentError,
    (ANY, "InvalidDiscountCancelCondition"): PermanentError,
    # "Fail" is NAVER's catch-all: at approval it is a refused charge (policy decides), on a
    # read it is worth another try, elsewhere the request itself is at fault.
    ("approval", "Fail"): DeclinedError,
    ("mutation", "Fail"): DeclinedError,  # e.g. a reserve on a registration NAVER has ended
    ("read", "Fail"): TransientError,
    (ANY, "Fail"): PermanentError,
    # Unknown codes. Approval/cancel: money may have moved under a code we don't know, and
    # calling it declined could lead to a second charge or refund; history decides.
    ("approval", ANY): UnknownOutcomeError,
    ("cancel", ANY): UnknownOutcomeError,
    # Reads change nothing: retrying is harmless and bounded by the caller's retry policy.
    ("read", ANY): TransientError,
    # Other mutations (reserve, registration, expire, confirm, points) move no money; a
    # scheduled retry is safer than a permanent failure that could expire a customer's
    # registration over a code NAVER merely added.
    ("mutation", ANY): DeclinedError,
    (ANY, ANY): UnknownOutcomeError,
}


# NAVER's answers about the customer's payment means: the only codes that may consume one of
# the customer's attempts (and so, in the end, expire their registration).
CUSTOMER_DECLINE_CODES: Final = frozenset({
    "NotEnoughAccountBalance", "OwnerAuthFail", "FaultCheckOngoing", "BankMaintenance",
    "BankCheckTime", "TimeExpired", "Fail",
})


def customer_decline(exc: NaverPayError) -> bool:
    """Whether ``exc`` is NAVER refusing the customer's means (the policy decides), as opposed
    to our own fault or a code we do not know (billing holds those and alerts a human)."""
    return isinstance(exc, DeclinedError) and exc.code in CUSTOMER_DECLINE_CODES


def error_class_for(kind: ApiKind, code: str) -> _ErrorClass:
    """The error class for a non-success ``code`` answered by an API of ``kind``."""
    for key in ((kind, code), (ANY, code), (kind, ANY), (ANY, ANY)):
        if key in CODE_TABLE:
            return CODE_TABLE[key]
    raise AssertionError("CODE_TABLE lacks its (ANY, ANY) default")  # pragma: no cover
