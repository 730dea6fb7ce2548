"""NAVER Pay merchant server API client (recurrent payments first).

Import from here: ``NaverPayClient``, ``NaverPayConfig``, the error classes and the result
types. This package imports neither Celery nor SQLAlchemy nor the rest of ``worker``; the
billing engine builds one client per worker process and passes it in.
"""

from worker.naverpay.client import NaverPayClient
from worker.naverpay.config import NaverPayConfig
from worker.naverpay.errors import (
    AuthenticationError,
    DeclinedError,
    MalformedResponseError,
    MerchantSideError,
    NaverPayError,
    PermanentError,
    TransientError,
    UnknownOutcomeError,
)
from worker.naverpay.results import (
    Approval,
    Cancellation,
    CashAmount,
    HistoryPage,
    PaymentDetail,
    PaymentReservation,
    PointAccrual,
    PurchaseConfirmation,
    Registration,
    RegistrationApproval,
    RegistrationExpiry,
    RegistrationPage,
    RegistrationReservation,
)
from worker.naverpay.wire import check_idempotency_key

__all__ = [
    "Approval",
    "AuthenticationError",
    "Cancellation",
    "CashAmount",
    "DeclinedError",
    "HistoryPage",
    "MalformedResponseError",
    "MerchantSideError",
    "NaverPayClient",
    "NaverPayConfig",
    "NaverPayError",
    "PaymentDetail",
    "PaymentReservation",
    "PermanentError",
    "PointAccrual",
    "PurchaseConfirmation",
    "Registration",
    "RegistrationApproval",
    "RegistrationExpiry",
    "RegistrationPage",
    "RegistrationReservation",
    "TransientError",
    "UnknownOutcomeError",
    "check_idempotency_key",
]
