"""Contract: cancels, history, one-time apply and the after-sale APIs against the real sandbox."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.worker.naverpay.conftest import SandboxControl, charge, new_key
from worker.naverpay import (
    Cancellation,
    NaverPayClient,
    PermanentError,
)

pytestmark = pytest.mark.integration


def charged(client: NaverPayClient, control: SandboxControl, amount: int = 10000) -> str:
    """The paymentId of a fresh approved charge of ``amount`` (all taxable)."""
    reservation, _ = charge(client, control.register(), amount=amount)
    return reservation.payment_id


def cancel(client: NaverPayClient, payment_id: str, amount: int, **extra: object
           ) -> Cancellation:
    """Cancel ``amount`` won (all taxable) with a fresh key."""
    options = {"idempotency_key": new_key("cancel"), **extra}
    return client.cancel_payment(payment_id=payment_id, cancel_amount=amount,
                                 tax_scope_amount=amount, tax_ex_scope_amount=0,
                                 reason="고객 요청", **options)  # type: ignore[arg-type]


def test_partial_then_full_cancel(client: NaverPayClient, control: SandboxControl) -> None:
    payment_id = charged(client, control)

    part = cancel(client, payment_id, 3000, expected_rest_amount=7000,
                  merchant_pay_transaction_key="refund-1")
    rest = cancel(client, payment_id, 7000, expected_rest_amount=0)

    assert (part.total_rest_amount, part.pending, bool(part.pay_hist_id)) == (7000, False, True)
    assert rest.total_rest_amount == 0
    rows = client.payment_history(payment_id=payment_id).rows
    assert [(r.admission_type_code, r.total_pay_amount) for r in rows[1:]] in (
        [("04", 3000), ("04", 7000)], [("04", 7000), ("04", 3000)])
    assert "refund-1" in [r.merchant_pay_transaction_key for r in rows]
    assert control.payment(payment_id)["state"] == "FULLY_CANCELLED"


def test_a_single_full_cancel_is_row_03(client: NaverPayClient, control: SandboxControl) -> None:
    payment_id = charged(client, control)

    cancel(client, payment_id, 10000)

    codes = sorted(r.admission_type_code or "" for r in
                   client.payment_history(payment_id=payment_id).rows)
    assert codes == ["01", "03"]


def test_a_repeated_cancel_key_replays_and_refunds_once(client: NaverPayClient,
                                                        control: SandboxControl) -> None:
    payment_id = charged(client, control)
    key = new_key("cancel")

    first = cancel(client, payment_id, 1000, idempotency_key=key)
    again = cancel(client, payment_id, 1000, idempotency_key=key)

    assert (first.replayed, again.replayed) == (False, True)
    assert again.pay_hist_id == first.pay_hist_id
    assert control.payment(payment_id)["restAmount"] == 9000


@pytest.mark.parametrize("first,second,extra,code", [
    (10000, 1000, {}, "AlreadyCanceled"),
    (0, 11000, {}, "OverRemainAmount"),
    (0, 1000, {"expected_rest_amount": 1234}, "RestAmountDiff"),
])
def test_cancel_rule_violations_are_permanent(client: NaverPayClient, control: SandboxControl,
                                              first: int, second: int, extra: dict[str, int],
                                              code: str) -> None:
    payment_id = charged(client, control)
    if first:
        cancel(client, payment_id, first)

    with pytest.raises(PermanentError) as info:
        cancel(client, payment_id, second, **extra)

    assert info.value.code == code
    if code == "RestAmountDiff":  # NAVER says what it thinks remains
        assert info.value.body is not None and info.value.body["totalRestAmount"] == 10000


def test_tax_split_not_adding_up_is_tax_scope_amount_error(client: NaverPayClient,
                                                           control: SandboxControl) -> None:
    payment_id = charged(client, control)

    with pytest.raises(PermanentError) as info:
        client.cancel_payment(payment_id=payment_id, cancel_amount=1000, tax_scope_amount=900,
                              tax_ex_scope_amount=0, reason="x", idempotency_key=new_key("c"))

    assert info.value.code == "TaxScopeAmountError"


def test_a_second_cancel_before_the_first_shows_is_pre_cancel_not_complete(
        client: NaverPayClient, control: SandboxControl) -> None:
    control.configure(cancelReflectSeconds=30)
    payment_id = charged(client, control)
    cancel(client, payment_id, 1000)

    with pytest.raises(PermanentError) as info:
        cancel(client, payment_id, 1000)

    assert info.value.code == "PreCancelNotComplete"


def test_cancel_not_complete_is_pending_then_completes_by_itself(
        client: NaverPayClient, control: SandboxControl) -> None:
    control.configure(cancelNotCompleteNext=1, cancelNotCompleteSeconds=0.3)
    payment_id = charged(client, control)

    pending = cancel(client, payment_id, 2000)
    time.sleep(0.5)

    assert (pending.pending, pending.pay_hist_id, pending.code) == (True, "", "CancelNotComplete")
    rows = client.payment_history(payment_id=payment_id).rows
    assert sorted(r.admission_type_code or "" for r in rows) == ["01", "04"]


def test_cancel_after_the_deadline_is_permanent(client: NaverPayClient,
                                                control: SandboxControl) -> None:
    control.configure(cancelDeadlineDays=0)
    payment_id = charged(client, control)
    time.sleep(0.05)

    with pytest.raises(PermanentError) as info:
        cancel(client, payment_id, 1000)

    assert info.value.code == "CancelDeadlineExpired"


def test_cancel_of_an_unknown_payment_is_invalid_payment_id(client: NaverPayClient) -> None:
    with pytest.raises(PermanentError) as info:
        cancel(client, "20261128NP9999999999", 1000)

    assert info.value.code == "InvalidPaymentId"


def test_history_of_an_unknown_payment_is_empty(client: NaverPayClient) -> None:
    page = client.payment_history(payment_id="20261128NP9999999999")

    assert (page.rows, page.total_count) == ([], 0)


def test_history_by_time_walks_pages(client: NaverPayClient, control: SandboxControl) -> None:
    payment_ids = {charged(client, control, amount=1000 + i) for i in range(3)}
    now = datetime.now(UTC)

    rows = list(client.iter_history(start=now - timedelta(hours=1), end=now + timedelta(
        minutes=1), approval_type="APPROVAL", rows_per_page=2))
    first = client.history_by_time(start=now - timedelta(hours=1), end=now + timedelta(minutes=1),
                                   rows_per_page=2)

    assert {r.payment_id for r in rows} == payment_ids
    assert (first.total_count, first.total_page_count, len(first.rows)) == (3, 2, 2)


def test_onetime_apply_uses_its_payment_and_replays(client: NaverPayClient,
                                                    control: SandboxControl) -> None:
    payment_id = control.onetime_payment(amount=5000)
    key = new_key("apply")

    first = client.apply_payment(payment_id=payment_id, idempotency_key=key)
    again = client.apply_payment(payment_id=payment_id, idempotency_key=key)

    assert first.detail is not None and first.detail.total_pay_amount == 5000
    assert again.replayed and control.payment(payment_id)["state"] == "APPROVED"
    refund = cancel(client, payment_id, 5000, onetime=True)
    assert refund.total_rest_amount == 0


def test_purchase_confirm_points_and_cash_amount(client: NaverPayClient,
                                                 control: SandboxControl) -> None:
    payment_id = charged(client, control, amount=11000)

    control.configure(settlementBasis="trade_confirm")
    confirmation = client.purchase_confirm(payment_id=payment_id,
                                           idempotency_key=new_key("confirm"))
    control.configure(settlementBasis="payment_date", pointBasis="manual")
    points = client.save_naverpoint(payment_id=payment_id, idempotency_key=new_key("point"))
    cash = client.cash_amount(payment_id=payment_id)

    assert confirmation.confirm_time is not None
    assert points.payment_id == payment_id
    assert cash.total_cash_amount >= 0


def test_points_not_allowed_is_permanent(client: NaverPayClient,
                                         control: SandboxControl) -> None:
    control.configure(naverpointSave=False)
    payment_id = charged(client, control)

    with pytest.raises(PermanentError) as info:
        client.save_naverpoint(payment_id=payment_id, idempotency_key=new_key("point"))

    assert info.value.code == "InvalidMerchantType"
