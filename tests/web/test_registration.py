"""Completing registrations against the real sandbox, on SQLite and PostgreSQL: at most one
approval and one subscription per return, whatever is replayed or forged; CHANGE moves the
subscription, its schedule and its pending retries to the new registration in one go."""

from __future__ import annotations

import pytest

from scheduler.walk import walk
from tests.web.conftest import World, change_flow, new_flow
from tests.worker.billing import make_engine
from worker.charging import process_charge

pytestmark = pytest.mark.integration


def test_a_confirmed_registration_creates_the_subscription_from_the_flow(world: World) -> None:
    reserve_id, temp = world.window.register()
    flow = new_flow(amount=9900, cron="0 9 1 * *", merchant_user_id="user-42")

    outcome = world.registrar.complete(flow, reserve_id, temp)

    assert outcome.status == "completed" and outcome.recurrent_id
    assert outcome.message == "네이버페이 정기결제 등록이 완료되었습니다."
    [sub] = world.subscriptions()
    assert tuple(sub[1:]) == (outcome.recurrent_id, "user-42", "PLAN-M", 9900, "0 9 1 * *", "active",
                              "user42@example.com")
    assert world.sandbox.registration(outcome.recurrent_id)["state"] == "VALID"
    assert [tuple(a) for a in world.attempts()] == [
        (reserve_id, "completed", "NEW", outcome.recurrent_id, sub[0])]


def test_a_replayed_return_approves_once_and_creates_one_subscription(world: World) -> None:
    reserve_id, temp = world.window.register()
    flow = new_flow()
    first = world.registrar.complete(flow, reserve_id, temp)

    again = [world.registrar.complete(flow, reserve_id, temp) for _ in range(3)]

    assert {(o.status, o.subscription_id, o.recurrent_id, o.replayed) for o in again} == {
        ("completed", first.subscription_id, first.recurrent_id, True)}
    assert len(world.subscriptions()) == 1
    assert len(world.sandbox.ledger()["registrations"]) == 1


def test_a_return_with_another_temp_receipt_id_is_refused_as_forged(world: World) -> None:
    reserve_id, temp = world.window.register()
    flow = new_flow()
    world.registrar.complete(flow, reserve_id, temp)

    forged = world.registrar.complete(flow, reserve_id, temp[:-3] + "XYZ")

    assert (forged.status, forged.code) == ("failed", "forged_return")
    assert "잘못된 요청" in forged.message
    assert len(world.subscriptions()) == 1


def test_one_state_token_yields_one_registration(world: World) -> None:
    flow = new_flow()
    world.registrar.complete(flow, *world.window.register())
    second_reserve, second_temp = world.window.register()

    reused = world.registrar.complete(flow, second_reserve, second_temp)

    assert (reused.status, reused.code) == ("failed", "state_used")
    assert len(world.subscriptions()) == 1
    # the second window was never approved at NAVER: one registration there too
    assert len(world.sandbox.ledger()["registrations"]) == 1


def test_a_made_up_temp_receipt_id_is_refused_by_naver_and_creates_nothing(world: World) -> None:
    reserve_id = world.window.open()
    world.window.decide(reserve_id)

    outcome = world.registrar.complete(new_flow(), reserve_id, "20261129TP0000000000AAAAAA")

    assert (outcome.status, outcome.code) == ("failed", "approval_failed")
    assert world.subscriptions() == []
    assert world.sandbox.ledger()["registrations"] == []


def test_an_outage_leaves_it_resumable_and_the_replay_completes_it(world: World) -> None:
    reserve_id, temp = world.window.register()
    flow = new_flow()
    world.sandbox.configure(maintenance="503")

    pending = world.registrar.complete(flow, reserve_id, temp)

    assert (pending.status, pending.code) == ("pending", "pending")
    assert "처리하고 있습니다" in pending.message
    assert len(world.sleeps.calls) == 2  # three tries, the same idempotency key each time
    assert world.subscriptions() == []
    world.sandbox.configure(maintenance="off")

    resumed = world.registrar.complete(flow, reserve_id, temp)

    assert resumed.status == "completed" and not resumed.replayed
    assert len(world.subscriptions()) == 1


def test_an_approval_in_progress_is_not_sent_again_by_a_concurrent_return(world: World) -> None:
    reserve_id, temp = world.window.register()
    flow = new_flow()
    world.db.sql("INSERT INTO registration_attempts (reserve_id, temp_receipt_id, state_nonce, "
                 "action_type, lease_until) VALUES (:r, :t, :n, 'NEW', :until)",
                 r=reserve_id, t=temp, n=flow.nonce, until=world.clock.advance(seconds=60))
    world.clock.advance(seconds=-60)

    outcome = world.registrar.complete(flow, reserve_id, temp)

    assert (outcome.status, outcome.code) == ("pending", "pending")
    assert world.sandbox.ledger()["registrations"] == []  # NAVER was not asked


def _subscribed(world: World) -> tuple[int, str]:
    reserve_id, temp = world.window.register()
    outcome = world.registrar.complete(new_flow(cron="* * * * * */10"), reserve_id, temp)
    assert outcome.subscription_id is not None and outcome.recurrent_id is not None
    return outcome.subscription_id, outcome.recurrent_id


def _charge(world: World, sub_id: int, status: str, cycle: str, recurrent_id: str, **extra: object) -> int:
    columns = {"subscription_id": sub_id, "recurrent_id": recurrent_id, "cycle_at": cycle,
               "merchant_pay_id": f"NPB-{sub_id}-{cycle}", "amount": 9900, "status": status, **extra}
    names = ", ".join(columns)
    world.db.sql(f"INSERT INTO charges ({names}) VALUES ({', '.join(':' + n for n in columns)})", **columns)
    return int(world.db.sql("SELECT max(id) FROM charges")[0][0])


def test_change_moves_the_subscription_and_its_pending_retry_to_the_new_registration(world: World) -> None:
    sub_id, old = _subscribed(world)
    world.db.sql("UPDATE subscriptions SET next_charge_at = '2026-12-01 00:00:00' WHERE id = :i", i=sub_id)
    paid = _charge(world, sub_id, "succeeded", "2026-11-01 00:00:00", old, payment_id="P1",
                   approved_amount=9900)
    retry = _charge(world, sub_id, "retry_wait", "2026-11-15 00:00:00", old, attempt_count=1,
                    next_attempt_at="2026-11-29 00:00:00")
    reserve_id, temp = world.window.register(action="CHANGE", target=old)
    flow = change_flow(sub_id, old)

    outcome = world.registrar.complete(flow, reserve_id, temp)

    assert outcome.status == "completed" and outcome.pre_recurrent_id == old
    assert "결제수단이 변경되었습니다" in outcome.message
    new = outcome.recurrent_id
    [sub] = world.db.sql("SELECT id, recurrent_id, cron, next_charge_at, status, lock_owner "
                         "FROM subscriptions")
    assert (sub[0], sub[1], sub[2], str(sub[3])[:19], sub[4], sub[5]) == (
        sub_id, new, "* * * * * */10", "2026-12-01 00:00:00", "active", None)
    charges = dict((r[0], (r[1], r[2], str(r[3])[:19] if r[3] else None)) for r in world.db.sql(
        "SELECT id, recurrent_id, status, next_attempt_at FROM charges"))
    assert charges == {paid: (old, "succeeded", None), retry: (new, "retry_wait", "2026-11-29 00:00:00")}
    # NAVER ended the old registration itself; nobody called expire on it, now or later
    old_reg = world.sandbox.registration(old)
    assert (old_reg["state"], old_reg["expireCalls"]) == ("EXPIRED", 0)
    assert world.sandbox.registration(new)["state"] == "VALID"

    replay = world.registrar.complete(flow, reserve_id, temp)
    assert replay.replayed and replay.recurrent_id == new
    assert len(world.sandbox.ledger()["registrations"]) == 2


def test_after_a_change_the_worker_bills_the_new_registration(world: World) -> None:
    sub_id, old = _subscribed(world)
    world.db.sql("UPDATE merchants SET min_cycle_interval = '1s'")
    reserve_id, temp = world.window.register(action="CHANGE", target=old)
    new = world.registrar.complete(change_flow(sub_id, old), reserve_id, temp).recurrent_id
    engine = make_engine(world.db, world.client, world.clock, world.sleeps)

    walk(world.db.sessions, world.clock())
    (charge_id,) = walk(world.db.sessions, world.clock.advance(seconds=10)).new_charge_ids
    process_charge(engine, charge_id, "after-change")

    assert world.db.sql("SELECT status, recurrent_id FROM charges WHERE id = :i", i=charge_id)[0] == (
        "succeeded", new)
    assert [p["state"] for p in world.sandbox.payments(new)] == ["APPROVED"]
    assert world.sandbox.payments(old) == []


@pytest.mark.parametrize("status", ["reserving", "reserved", "approving", "unknown"])
def test_change_waits_while_a_payment_is_in_flight_on_the_old_registration(world: World, status: str) -> None:
    sub_id, old = _subscribed(world)
    _charge(world, sub_id, status, "2026-11-15 00:00:00", old, payment_id="P1")
    reserve_id, temp = world.window.register(action="CHANGE", target=old)

    outcome = world.registrar.complete(change_flow(sub_id, old), reserve_id, temp)

    assert (outcome.status, outcome.code) == ("failed", "change_busy")
    assert "결제가 진행 중" in outcome.message
    assert world.sandbox.registration(old)["state"] == "VALID"  # NAVER was not asked
    # nothing recorded for the CHANGE: the customer may try again in a moment
    assert [a[2] for a in world.attempts()] == ["NEW"]
    assert world.db.sql("SELECT recurrent_id, lock_owner FROM subscriptions")[0] == (old, None)


def test_change_waits_while_a_charge_run_holds_the_subscription(world: World) -> None:
    sub_id, old = _subscribed(world)
    world.db.sql("UPDATE subscriptions SET lock_owner = 'worker-1', lock_until = :u",
                 u=world.clock.advance(seconds=60))
    world.clock.advance(seconds=-60)
    reserve_id, temp = world.window.register(action="CHANGE", target=old)

    outcome = world.registrar.complete(change_flow(sub_id, old), reserve_id, temp)

    assert (outcome.status, outcome.code) == ("failed", "change_busy")
    assert world.sandbox.registration(old)["state"] == "VALID"


def test_a_stale_change_of_a_registration_already_replaced_is_refused(world: World) -> None:
    sub_id, old = _subscribed(world)
    first = world.window.register(action="CHANGE", target=old)
    world.registrar.complete(change_flow(sub_id, old), *first)

    stale = world.registrar.complete(change_flow(sub_id, old), "another-reserve-id", "another-temp")

    assert (stale.status, stale.code) == ("failed", "change_stale")
    assert len(world.sandbox.ledger()["registrations"]) == 2


@pytest.mark.parametrize("status", ["canceled", "revoking", "revoked"])
def test_a_subscription_that_is_ending_cannot_change_means(world: World, status: str) -> None:
    sub_id, old = _subscribed(world)
    world.db.sql("UPDATE subscriptions SET status = :s", s=status)
    reserve_id, temp = world.window.register(action="CHANGE", target=old)

    outcome = world.registrar.complete(change_flow(sub_id, old), reserve_id, temp)

    assert (outcome.status, outcome.code) == ("failed", "change_not_allowed")
    assert world.sandbox.registration(old)["state"] == "VALID"


def test_a_charge_held_before_reserving_does_not_block_a_change_and_follows_it(world: World) -> None:
    sub_id, old = _subscribed(world)
    held = _charge(world, sub_id, "held", "2026-11-15 00:00:00", old, held_from="reserving")
    reserve_id, temp = world.window.register(action="CHANGE", target=old)

    outcome = world.registrar.complete(change_flow(sub_id, old), reserve_id, temp)

    assert outcome.status == "completed"
    [(moved,)] = world.db.sql("SELECT recurrent_id FROM charges WHERE id = :i", i=held)
    assert moved == outcome.recurrent_id
