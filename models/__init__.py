"""SQLAlchemy 2.0 models, the engine/session factory and the Alembic migrations.

This package imports nothing else of the project (layers flow models <- scheduler <- worker).
"""

from models.db import database_url_from_env, make_engine, make_session_factory
from models.tables import (
    FINAL_CHARGE_STATUSES,
    INFLIGHT_CHARGE_STATUSES,
    NONFINAL_CHARGE_STATUSES,
    UNSETTLED_CHARGE_STATUSES,
    Base,
    Charge,
    ChargeAttempt,
    ChargeStatus,
    FinalAction,
    Merchant,
    MissedCycles,
    Notification,
    NotificationStatus,
    RegistrationAttempt,
    RegistrationAttemptStatus,
    RevokeReason,
    Subscription,
    SubscriptionStatus,
)
from models.types import UTCDateTime, utcnow

__all__ = [
    "FINAL_CHARGE_STATUSES",
    "INFLIGHT_CHARGE_STATUSES",
    "NONFINAL_CHARGE_STATUSES",
    "UNSETTLED_CHARGE_STATUSES",
    "Base",
    "Charge",
    "ChargeAttempt",
    "ChargeStatus",
    "FinalAction",
    "Merchant",
    "MissedCycles",
    "Notification",
    "NotificationStatus",
    "RegistrationAttempt",
    "RegistrationAttemptStatus",
    "RevokeReason",
    "Subscription",
    "SubscriptionStatus",
    "UTCDateTime",
    "database_url_from_env",
    "make_engine",
    "make_session_factory",
    "utcnow",
]
