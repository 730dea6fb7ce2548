"""Contract: NaverPayClient against the real sandbox over loopback HTTP.

Registrations, charges, idempotency, unknown outcomes, declines and transport failures. Cancels
and the after-sale APIs are in ``test_contract_sandbox_cancel.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.worker.naverpay.conftest import SandboxControl, charge, new_key, reserve, sandbox_client
from worker.naverpay import (
    AuthenticationError,
    DeclinedError,
    NaverPayClient,
    NaverPayError,
    PermanentError,
    TransientError,
    UnknownOutcomeError,
)

pytestmark = pytest.mark.integration


# -- registration ------------------------------------------------------------------------------

def register_through_the_page(client: NaverPayClient, control: SandboxControl,
                              replacing: str | None = None) -> str:
    reservation = client.reserve_registration(
        product_code="PLAN-M", product_name="월간 구독", total_pay_amount=9900,
        return_url="https://shop.test/naverpay/return", idempotency_key=new_key("rr"),
        action_type="CHANGE" if replacing else "NEW", target_recurrent_id=replacing)
    temp_receipt_id = control.authorize(reservation.reserve_id)
    approval = client.approve_registration(reserve_id=reservation.reserve_id,
                                           temp_receipt_id=temp_receipt_id,
                                           idempotency_key=new_key("ra"))
    assert approval.reserve_id in (None, reservation.reserve_id)
    return approval.recurrent_id


def test_registration_reserve_authorize_approve_list_expire(
        client: NaverPayClient, control: SandboxControl) -> None:
    recurrent_id = register_through_the_page(client, control)

    (listed,) = client.list_registrations(recurrent_id=recurrent_id).registrations
    expiry = client.expire_registration(recurrent_id=recurrent_id, reason="고객 해지",
                                        idempotency_key=new_key("exp"))
    (after,) = client.list_registrations(recurrent_id=recurrent_id).registrations

    assert (listed.recurrent_id, listed.recurrent_state, listed.product_code) == (
        recurrent_id, "VALID", "PLAN-M")
    assert listed.regist_ymdt is not None and listed.regist_ymdt.tzinfo is not None
    assert expiry.recurrent_id == recurrent_id
    assert after.recurrent_state == "EXPIRED" and after.expire_ymdt is not None


def test_change_registration_replaces_the_old_one(client: NaverPayClient,
                                                  control: SandboxControl) -> None:
    old = control.register()

    new = register_through_the_page(client, control, replacing=old)

    states = {r.recurrent_id: r.recurrent_state for r in client.iter_registrations(
        start=_now() - timedelta(days=1), end=_now() + timedelta(minutes=1), rows_per_page=1)}
    assert states == {old: "EXPIRED", new: "VALID"}


def test_reserve_on_an_expired_registration_is_refused(client: NaverPayClient,
                                                       control: SandboxControl) -> None:
    recurrent_id = control.register()
    client.expire_registration(recurrent_id=recurrent_id, reason="해지",
                               idempotency_key=new_key("exp"))

    with pytest.raises(DeclinedError) as info:  # NAVER's generic refusal: the policy decides
        reserve(client, recurrent_id)

    assert info.value.code == "Fail"


# -- charging ------------------------------------------------------------------------------------

def test_reserve_and_approve_charge_once_and_show_in_history(
        client: NaverPayClient, control: SandboxControl) -> None:
    recurrent_id = control.register()

    reservation, approval = charge(client, recurrent_id, amount=9900, tax_ex=900)

    assert approval.payment_id == reservation.payment_id
    assert approval.detail is not None
    assert (approval.detail.total_pay_amount, approval.detail.tax_ex_scope_amount) == (9900, 900)
    assert (approval.detail.admission_state, approval.detail.admission_type_code) == (
        "SUCCESS", "01")
    (row,) = client.payment_history(payment_id=reservation.payment_id).rows
    assert (row.admission_type_code, row.admission_state, row.total_pay_amount) == (
        "01", "SUCCESS", 9900)
    assert control.payment(reservation.payment_id)["state"] == "APPROVED"


def test_a_repeated_key_replays_the_first_answer_and_charges_once(
        client: NaverPayClient, control: SandboxControl) -> None:
    recurrent_id = control.register()
    reservation = reserve(client, recurrent_id)
    key = new_key("approve")

    first = client.approve_payment(recurrent_id=recurrent_id,
                                   payment_id=reservation.payment_id, idempotency_key=key)
    again = client.approve_payment(recurrent_id=recurrent_id,
                                   payment_id=reservation.payment_id, idempotency_key=key)

    assert (first.replayed, again.replayed) == (False, True)
    assert first.detail is not None and again.detail is not None
    assert again.detail.pay_hist_id == first.detail.pay_hist_id
    charged = [p for p in control.ledger()["payments"] if p["state"] == "APPROVED"]
    assert [p["paymentId"] for p in charged] == [reservation.payment_id]
    assert len(client.payment_history(payment_id=reservation.payment_id).rows) == 1


def test_approving_again_with_a_new_key_is_already_complete(
        client: NaverPayClient, control: SandboxControl) -> None:
    recurrent_id = control.register()
    reservation, _ = charge(client, recurrent_id)

    with pytest.raises(UnknownOutcomeError) as info:
        client.approve_payment(recurrent_id=recurrent_id, payment_id=reservation.payment_id,
                               idempotency_key=new_key("approve"))

    assert info.value.code == "AlreadyComplete"


def test_a_timeout_after_the_charge_is_an_unknown_outcome_resolved_by_history(
        sandbox_url: str, control: SandboxControl) -> None:
    recurrent_id = control.register({"timeoutAfterCommitTimes": 1, "timeoutSeconds": 2})
    with sandbox_client(sandbox_url, approval_timeout=0.5) as impatient:
        reservation = reserve(impatient, recurrent_id)
        key = new_key("approve")
        started = time.monotonic()

        with pytest.raises(UnknownOutcomeError) as info:
            impatient.approve_payment(recurrent_id=recurrent_id,
                                      payment_id=reservation.payment_id, idempotency_key=key)

        assert time.monotonic() - started < 1.5
        assert "ReadTimeout" in str(info.value) and info.value.code is None
        (row,) = impatient.payment_history(payment_id=reservation.payment_id).rows
        assert (row.admission_type_code, row.admission_state) == ("01", "SUCCESS")
        # While NAVER still holds the first answer a new approval is AlreadyOnGoing; after
        # it, AlreadyComplete. Both say "resolve first"; only the same key gets the detail.
        with pytest.raises(UnknownOutcomeError, match="AlreadyOnGoing"):
            approve_again(impatient, recurrent_id, reservation.payment_id)
        time.sleep(max(0.0, started + 2.2 - time.monotonic()))
        with pytest.raises(UnknownOutcomeError, match="AlreadyComplete"):
            approve_again(impatient, recurrent_id, reservation.payment_id)
        replay = impatient.approve_payment(recurrent_id=recurrent_id,
                                           payment_id=reservation.payment_id,
                                           idempotency_key=key)
        assert replay.replayed and replay.detail is not None
        assert replay.detail.pay_hist_id == row.pay_hist_id
    assert control.payment(reservation.payment_id)["state"] == "APPROVED"


def approve_again(client: NaverPayClient, recurrent_id: str, payment_id: str) -> None:
    client.approve_payment(recurrent_id=recurrent_id, payment_id=payment_id,
                           idempotency_key=new_key("approve"))


def test_concurrent_approvals_of_one_payment_answer_already_on_going(
        client: NaverPayClient, control: SandboxControl) -> None:
    recurrent_id = control.register({"latencyMs": 600})
    reservation = reserve(client, recurrent_id)
    outcomes: list[object] = []

    def approve() -> None:
        try:
            outcomes.append(client.approve_payment(recurrent_id=recurrent_id,
                                                   payment_id=reservation.payment_id,
                                                   idempotency_key=new_key("approve")))
        except NaverPayError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=approve) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()

    errors = [o for o in outcomes if isinstance(o, NaverPayError)]
    assert len(outcomes) == 2 and len(errors) == 1
    assert isinstance(errors[0], UnknownOutcomeError) and errors[0].code == "AlreadyOnGoing"


@pytest.mark.parametrize("code", ["NotEnoughAccountBalance", "OwnerAuthFail", "BankMaintenance",
                                  "FaultCheckOngoing", "Fail"])
def test_declines_raise_declined_with_the_code_and_leave_a_fail_row(
        client: NaverPayClient, control: SandboxControl, code: str) -> None:
    recurrent_id = control.register({"declineCode": code, "declineTimes": 1})

    with pytest.raises(DeclinedError) as info:
        charge(client, recurrent_id)
    _, retry = charge(client, recurrent_id)  # the policy's next attempt: a new reservation

    payment_id = next(p["paymentId"] for p in control.ledger()["payments"]
                      if p["state"] == "DECLINED")
    (row,) = client.payment_history(payment_id=payment_id).rows
    assert (info.value.code, info.value.http_status) == (code, 200)
    assert (row.admission_type_code, row.admission_state) == ("01", "FAIL")
    assert retry.detail is not None and retry.detail.admission_state == "SUCCESS"


def test_approval_after_the_reserve_window_is_time_expired(
        client: NaverPayClient, control: SandboxControl) -> None:
    control.configure(reserveWindowSeconds=0.2)
    recurrent_id = control.register()
    reservation = reserve(client, recurrent_id)
    time.sleep(0.4)

    with pytest.raises(DeclinedError) as info:
        client.approve_payment(recurrent_id=recurrent_id, payment_id=reservation.payment_id,
                               idempotency_key=new_key("approve"))

    assert info.value.code == "TimeExpired"


def test_a_server_error_is_transient_and_the_same_key_then_succeeds(
        client: NaverPayClient, control: SandboxControl) -> None:
    recurrent_id = control.register({"serverErrorTimes": 1, "serverErrorStatus": 503})
    reservation = reserve(client, recurrent_id)
    key = new_key("approve")

    with pytest.raises(TransientError) as info:
        client.approve_payment(recurrent_id=recurrent_id, payment_id=reservation.payment_id,
                               idempotency_key=key)
    approval = client.approve_payment(recurrent_id=recurrent_id,
                                      payment_id=reservation.payment_id, idempotency_key=key)

    assert info.value.http_status == 503
    assert approval.detail is not None and approval.replayed is False


@pytest.mark.parametrize("code,expected", [("InvalidParameter", PermanentError),
                                           ("MaintenanceOngoing", TransientError)])
def test_a_scripted_reserve_code_is_classified(client: NaverPayClient, control: SandboxControl,
                                               code: str, expected: type[NaverPayError]) -> None:
    recurrent_id = control.register({"reserveCode": code})

    with pytest.raises(expected) as info:
        reserve(client, recurrent_id)

    assert info.value.code == code


@pytest.mark.parametrize("amount,tax_ex,why", [(9900, 10000, "tax split"), (5, 0, "minimum")])
def test_bad_amounts_at_reserve_are_permanent(client: NaverPayClient, control: SandboxControl,
                                              amount: int, tax_ex: int, why: str) -> None:
    recurrent_id = control.register()

    with pytest.raises(PermanentError) as info:
        client.reserve_payment(recurrent_id=recurrent_id, total_pay_amount=amount,
                               tax_scope_amount=amount, tax_ex_scope_amount=tax_ex,
                               product_name="x", merchant_pay_id=new_key("m"),
                               merchant_user_id="u", idempotency_key=new_key("r"))

    assert info.value.code == "InvalidParameter", why


# -- credentials, maintenance, faults ------------------------------------------------------------

def test_a_wrong_secret_is_an_authentication_error(sandbox_url: str) -> None:
    with sandbox_client(sandbox_url, client_secret="wrong-secret-value") as wrong:
        with pytest.raises(AuthenticationError) as info:
            wrong.payment_history(payment_id="20261128NP0000000001")

    assert info.value.http_status == 401
    assert "wrong-secret-value" not in str(info.value) + repr(info.value) + (info.value.raw or "")


def test_a_wrong_chain_id_is_invalid_merchant(sandbox_url: str, control: SandboxControl) -> None:
    with sandbox_client(sandbox_url, chain_id="someone-elses-chain") as wrong:
        with pytest.raises(AuthenticationError) as info:
            reserve(wrong, control.register())

    assert info.value.code == "InvalidMerchant"


# -- the optional chain id (NAVER issues one to group-type merchants only) ---------------------

def test_reserve_and_approve_without_a_chain_id(sandbox_url: str,
                                                control: SandboxControl) -> None:
    recurrent_id = control.register()
    with sandbox_client(sandbox_url, chain_id=None, onetime_chain_id=None) as plain:
        reservation, approval = charge(plain, recurrent_id)

    assert approval.detail is not None and approval.detail.admission_state == "SUCCESS"
    assert control.payment(reservation.payment_id)["state"] == "APPROVED"


def test_a_sandbox_requiring_a_chain_id_shows_none_is_sent_unless_configured(
        sandbox_url: str, control: SandboxControl) -> None:
    control.configure(requireChainId=True, chainIds=["group-chain"])
    recurrent_id = control.register()

    with sandbox_client(sandbox_url) as plain, pytest.raises(AuthenticationError) as info:
        reserve(plain, recurrent_id)
    with sandbox_client(sandbox_url, chain_id="group-chain") as group:
        reservation, _ = charge(group, recurrent_id)

    assert info.value.code == "InvalidMerchant"
    assert control.payment(reservation.payment_id)["state"] == "APPROVED"


@pytest.mark.parametrize("mode,status", [("503", 503), ("MaintenanceOngoing", 200)])
def test_maintenance_is_transient(client: NaverPayClient, control: SandboxControl, mode: str,
                                  status: int) -> None:
    recurrent_id = control.register()
    control.configure(maintenance=mode)

    with pytest.raises(TransientError) as info:
        reserve(client, recurrent_id)

    assert info.value.http_status == status


def test_injected_server_errors_are_transient(client: NaverPayClient,
                                              control: SandboxControl) -> None:
    control.faults(errorRate=1.0, errorStatus=502, seed=1)

    with pytest.raises(TransientError) as info:
        client.payment_history(payment_id="20261128NP0000000001")

    assert info.value.http_status == 502


def test_unknown_members_from_naver_are_ignored(client: NaverPayClient,
                                                control: SandboxControl) -> None:
    control.configure(extraResponseFields=True)

    _, approval = charge(client, control.register())

    assert approval.detail is not None and approval.raw["sandboxExtraMember"]


def test_the_secret_stays_out_of_logs_on_real_http(sandbox_url: str, control: SandboxControl,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with sandbox_client(sandbox_url, client_secret="sandbox-client-secret") as naverpay:
        charge(naverpay, control.register())
        with pytest.raises(PermanentError):
            naverpay.apply_payment(payment_id="20261128NP0000000009",
                                   idempotency_key=new_key("a"))

    assert "naverpay pay_approval: HTTP 200, code Success" in caplog.text
    assert "sandbox-client-secret" not in caplog.text


def _now() -> datetime:
    return datetime.now(UTC)
