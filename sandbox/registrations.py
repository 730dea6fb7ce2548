"""Registration rules: reserve, "complete the page", approve into a recurrentId, expire, list.

::

    regist/v1/reserve      /_sandbox/registrations/{reserveId}/authorize      regist/v1/approval
    ─────────▶ RESERVED ───────────────────────────────────▶ AUTHORIZED ──────────────▶ VALID
                                     POST /_sandbox/registrations ─────────────────▶ VALID
    VALID ── expire/v1/request | CHANGE approval of a successor | user removes it ──▶ EXPIRED

The registration window (``sandbox.window``, opened by the SDK shim) reserves with the SDK's
parameters, then authorizes (the user confirmed) or cancels (the user canceled, or the
window's time ran out: ``RESERVED ─▶ CANCELED``, which no approval completes).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sandbox.behaviour import Behaviour
from sandbox.clock import IdFactory, ymdt
from sandbox.codes import ApiError, Code
from sandbox.records import Registration, RegistrationState, Reservation, ReservationState


@dataclass(frozen=True, slots=True)
class RegistReserve:
    """The fields of ``recurrent/regist/v1/reserve``."""

    action_type: str
    target_recurrent_id: str | None
    product_code: str
    product_name: str
    total_pay_amount: int
    return_url: str
    merchant_user_id: str = ""


class RegistrationBook:
    """All registrations (by recurrentId) and registration reservations (by reserveId)."""

    def __init__(self, ids: IdFactory) -> None:
        self._ids = ids
        self.by_id: dict[str, Registration] = {}
        self.reservations: dict[str, Reservation] = {}

    def create(
        self, *, merchant_user_id: str, product_code: str, product_name: str,
        behaviour: Behaviour, now: datetime, recurrent_id: str | None = None,
        registered_at: datetime | None = None,
    ) -> Registration:
        """A VALID registration made without the browser flow (control API); ``registered_at``
        backdates it (the registration list filters by registration time)."""
        if recurrent_id is not None and recurrent_id in self.by_id:
            raise ValueError(f"recurrentId {recurrent_id} already exists")
        registration = Registration(
            recurrent_id=recurrent_id or self._ids.recurrent_id(now),
            merchant_user_id=merchant_user_id, product_code=product_code,
            product_name=product_name, regist_ymdt=ymdt(registered_at or now), behaviour=behaviour,
        )
        self.by_id[registration.recurrent_id] = registration
        return registration

    def reserve(self, request: RegistReserve, now: datetime) -> Reservation:
        """Open a registration page; CHANGE needs a VALID registration to replace."""
        if request.action_type == "CHANGE":
            self.require_valid(request.target_recurrent_id or "", Code.INVALID_PARAMETER)
        reservation = Reservation(
            reserve_id=self._ids.reserve_id(now), action_type=request.action_type,
            target_recurrent_id=request.target_recurrent_id, product_code=request.product_code,
            product_name=request.product_name, total_pay_amount=request.total_pay_amount,
            return_url=request.return_url, merchant_user_id=request.merchant_user_id,
        )
        self.reservations[reservation.reserve_id] = reservation
        return reservation

    def authorize(
        self, reserve_id: str, now: datetime, *, merchant_user_id: str | None = None,
        behaviour: Behaviour | None = None,
    ) -> Reservation:
        """The user completed the page: KeyError if unknown, ValueError if not RESERVED."""
        reservation = self.reservations[reserve_id]
        if reservation.state is not ReservationState.RESERVED:
            raise ValueError(f"reservation is {reservation.state}, not RESERVED")
        reservation.state = ReservationState.AUTHORIZED
        reservation.temp_receipt_id = self._ids.temp_receipt_id(now)
        if merchant_user_id is not None:
            reservation.merchant_user_id = merchant_user_id
        if behaviour is not None:
            reservation.behaviour = behaviour
        return reservation

    def cancel(self, reserve_id: str) -> Reservation:
        """The user canceled in the window (or its time ran out): KeyError if unknown,
        ValueError if the window was already completed."""
        reservation = self.reservations[reserve_id]
        if reservation.state is not ReservationState.RESERVED:
            raise ValueError(f"reservation is {reservation.state}, not RESERVED")
        reservation.state = ReservationState.CANCELED
        return reservation

    def approve(self, reserve_id: str, temp_receipt_id: str, now: datetime) -> Registration:
        """``regist/v1/approval``: an AUTHORIZED reservation becomes a VALID registration."""
        reservation = self.reservations.get(reserve_id)
        if reservation is None or reservation.temp_receipt_id not in (None, temp_receipt_id):
            raise ApiError(Code.INVALID_PARAMETER, "유효하지 않은 등록 예약번호입니다.")
        if reservation.state is ReservationState.APPROVED:
            raise ApiError(Code.ALREADY_COMPLETE, "이미 등록이 완료되었습니다.")
        if reservation.state is ReservationState.RESERVED:
            raise ApiError(Code.FAIL, "사용자가 등록 화면을 완료하지 않았습니다.")
        if reservation.state is ReservationState.CANCELED:
            raise ApiError(Code.FAIL, "사용자가 등록을 취소했거나 등록 시간이 지났습니다.")
        previous = self._previous_for(reservation)
        registration = self.create(
            merchant_user_id=reservation.merchant_user_id or _user_of(previous),
            product_code=reservation.product_code, product_name=reservation.product_name,
            behaviour=reservation.behaviour, now=now,
        )
        if previous is not None:  # CHANGE: the new key replaces the old one
            self._end(previous, now, requester="2", reason="결제수단 변경")
        reservation.state = ReservationState.APPROVED
        reservation.recurrent_id = registration.recurrent_id
        return registration

    def expire(self, recurrent_id: str, requester: str, reason: str, now: datetime) -> Registration:
        """``expire/v1/request``: end a VALID registration."""
        registration = self.by_id.get(recurrent_id)
        if registration is None:
            raise ApiError(Code.INVALID_PARAMETER, "존재하지 않는 정기결제 등록번호입니다.")
        registration.expire_calls += 1
        if registration.state is RegistrationState.EXPIRED:
            raise ApiError(Code.FAIL, "이미 해지된 정기결제입니다.")
        self._end(registration, now, requester=requester, reason=reason)
        return registration

    def require_valid(self, recurrent_id: str, code: str) -> Registration:
        """The VALID registration ``recurrent_id``; else ApiError(code) saying why."""
        registration = self.by_id.get(recurrent_id)
        if registration is None:
            raise ApiError(code, f"존재하지 않는 정기결제 등록번호입니다. (recurrentId={recurrent_id})")
        if registration.state is not RegistrationState.VALID:
            raise ApiError(code, f"해지된 정기결제입니다. (recurrentId={recurrent_id})")
        return registration

    def select(self, start: str, end: str, state: str) -> list[Registration]:
        """Registrations made between ``start`` and ``end`` in ``state`` (or ALL), oldest first."""
        return [
            reg for reg in self.by_id.values()
            if start <= reg.regist_ymdt <= end and state in ("ALL", reg.state)
        ]

    def _previous_for(self, reservation: Reservation) -> Registration | None:
        if reservation.action_type != "CHANGE":
            return None
        return self.require_valid(reservation.target_recurrent_id or "", Code.FAIL)

    @staticmethod
    def _end(registration: Registration, now: datetime, *, requester: str, reason: str) -> None:
        registration.state = RegistrationState.EXPIRED
        registration.expire_ymdt = ymdt(now)
        registration.expire_requester = requester
        registration.expire_reason = reason


def _user_of(registration: Registration | None) -> str:
    return registration.merchant_user_id if registration is not None else ""
