"""A faithful local simulator of the NAVER Pay 결제형 server APIs, recurrent payments first.

Run it with ``python -m sandbox --port 8055`` (or :func:`sandbox.server.run`). It answers the
real paths ``POST /{partnerId}/naverpay/payments/...`` with NAVER's envelope
``{"code", "message", "body"}``, its result codes and Korean messages, checks the three
credential headers, honours ``X-NaverPay-Idempotency-Key``, and keeps everything in memory.
A control API under ``/_sandbox`` scripts it (see :mod:`sandbox.control`). It imports nothing
from ``models``, ``scheduler`` or ``worker``: it is an independent fake of NAVER.

Registration state machine (:mod:`sandbox.registrations`)::

    regist/v1/reserve      /_sandbox/registrations/{reserveId}/authorize      regist/v1/approval
    ─────────▶ RESERVED ───────────────────────────────────▶ AUTHORIZED ──────────────▶ VALID
                                     POST /_sandbox/registrations ─────────────────▶ VALID
    VALID ── expire/v1/request | CHANGE approval of a successor | user removes it ──▶ EXPIRED

Payment state machine (:mod:`sandbox.payments`, :mod:`sandbox.cancels`)::

    pay/v3/reserve ─▶ RESERVED ─approval─▶ APPROVED (history 01 SUCCESS)
                         │          └────▶ DECLINED (history 01 FAIL; approving again: Fail)
                         └─ window passes ─▶ EXPIRED (approval: TimeExpired)
    APPROVED ─cancel(all, as the first cancel)─▶ FULLY_CANCELLED (history 03)
    APPROVED ─cancel(part)─▶ PARTIALLY_CANCELLED (04) ─cancel(rest)─▶ FULLY_CANCELLED (04)
    charged ─cancel answered CancelNotComplete─▶ CANCEL_PENDING ─(delay, by itself)─▶ as above

Approval of a charged payment answers ``AlreadyComplete`` (no detail); a second approval or
cancel while one is in flight for the same paymentId answers ``AlreadyOnGoing``.

Layout: pure state (``records``, ``registrations``, ``payments``, ``cancels``, ``history``,
``idempotency``, ``state``) under an HTTP layer (``app``, ``api_recurrent``, ``api_payments``,
``control``); ``codes`` is the one table of result codes and messages; ``clock`` is the one
(injectable) source of time.
"""
