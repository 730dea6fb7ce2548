"""``npay-billing``: db, subscriptions, charges, status and watch on real SQLite and PostgreSQL.

Retry (with a real redis-server) is in test_cli_retry.py; demo and sandbox (with the real
sandbox) in test_cli_demo.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models import ChargeStatus, SubscriptionStatus
from tests.worker.cli_helpers import add_charge, cli, cli_json, subscribe
from worker.cli.charges import CHARGE_STATUSES
from worker.cli.output import table, when, won
from worker.cli.subscriptions import SUBSCRIPTION_STATUSES
from worker.cli.support import redact

ADD = ["subscriptions", "add", "--recurrent-id", "RE-NEW", "--user", "user-7", "--product-code",
       "PLAN-M", "--product-name", "월간 구독", "--amount", "9900"]


def test_help_lists_every_command():
    result = cli("sqlite://", "--help")
    assert result.exit_code == 0
    for command in ("db", "subscriptions", "charges", "retry", "status", "watch", "sandbox", "demo"):
        assert command in result.output
    assert "DATABASE_URL" in result.output and "CELERY_BROKER_URL" in result.output


def test_status_choices_match_the_models():
    assert set(SUBSCRIPTION_STATUSES) == {s.value for s in SubscriptionStatus}
    assert set(CHARGE_STATUSES) == {s.value for s in ChargeStatus}


@pytest.mark.parametrize("args", [["status"], ["subscriptions", "list"], ["charges", "show", "1"],
                                  ["retry", "1"], ["watch", "--once"], ["demo"]])
def test_a_database_not_migrated_is_refused_with_what_to_do(sqlite_url, args):
    result = cli(sqlite_url, *args)
    assert result.exit_code == 2
    assert f"the database at {sqlite_url} is not migrated; run `npay-billing db upgrade`" in result.stderr
    assert "Traceback" not in result.output


def test_db_upgrade_then_current(database_url):
    assert cli(database_url, "db", "current").exit_code == 1  # not migrated yet
    upgraded = cli(database_url, "db", "upgrade")
    assert upgraded.exit_code == 0 and "revision 0007_consent" in upgraded.output
    assert cli(database_url, "db", "upgrade").exit_code == 0  # again: nothing to do
    assert cli_json(database_url, "db", "current")["up_to_date"] is True


def test_an_unreachable_database_says_so():
    result = cli("postgresql://billing:s3cret@127.0.0.1:1/npay", "status")
    assert result.exit_code == 2
    assert "cannot open the database at postgresql://billing:***@127.0.0.1:1/npay" in result.stderr
    assert "s3cret" not in result.output


def test_redact_hides_only_the_password():
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("sqlite:///var/x.db") == "sqlite:///var/x.db"


def test_add_inserts_the_row_a_user_would_insert(db):
    added = cli_json(db.url, *ADD, "--cron", "0  9 1 * *", "--email", "a@example.com")
    assert added["status"] == "active" and added["timezone"] == "Asia/Seoul"
    assert added["cron"] == "0 9 1 * *"  # normalised
    assert added["next_charge_at"] is None  # the walk schedules it
    row = db.sql("SELECT merchant_id, amount, tax_free_amount, customer_email FROM subscriptions")
    assert [tuple(r) for r in row] == [(1, 9900, 0, "a@example.com")]
    plain = cli(db.url, *ADD[:3], "RE-2", *ADD[4:], "--cron", "0 9 1 * *")
    assert plain.exit_code == 0 and "added subscription" in plain.output


@pytest.mark.parametrize("extra, message", [
    (["--cron", "0 25 * * *"], "cron '0 25 * * *': invalid hour field '25'"),
    (["--cron", "0 9 1 *"], "has 4 fields"),
    (["--cron", "* * * * *", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    (["--cron", "* * * * *", "--amount", "0"], "--amount must be a positive number of won, got 0"),
    (["--cron", "* * * * *", "--tax-free", "10000"], "--tax-free must be between 0 and the amount (9900)"),
    (["--cron", "* * * * *", "--merchant-id", "9"], "no merchant with id 9"),
])
def test_add_validates_before_inserting(sqlite_db, extra, message):
    result = cli(sqlite_db.url, *ADD, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert sqlite_db.sql("SELECT count(*) FROM subscriptions")[0][0] == 0


def test_add_refuses_a_recurrent_id_already_used(sqlite_db):
    subscribe(sqlite_db, "RE-NEW")
    result = cli(sqlite_db.url, *ADD, "--cron", "* * * * *")
    assert result.exit_code == 2 and "recurrentId 'RE-NEW' is already subscription 1" in result.stderr


def test_list_and_show_by_id_or_recurrent_id(db):
    first = subscribe(db, "RE-A", amount=12000)
    subscribe(db, "RE-B", status="paused")
    add_charge(db, first, "succeeded", approved_amount=12000)
    listed = cli(db.url, "subscriptions", "list")
    assert listed.exit_code == 0
    assert "RE-A" in listed.output and "12,000원" in listed.output and "월간 구독" in listed.output
    paused = cli_json(db.url, "subscriptions", "list", "--status", "paused")
    assert [s["recurrent_id"] for s in paused] == ["RE-B"]
    shown = cli_json(db.url, "subscriptions", "show", "RE-A")
    assert shown["subscription"]["id"] == first
    assert [c["status"] for c in shown["charges"]] == ["succeeded"]
    text = cli(db.url, "subscriptions", "show", str(first))
    assert "recent charges" in text.output and "succeeded" in text.output


def test_an_unknown_subscription_says_where_to_look(sqlite_db):
    result = cli(sqlite_db.url, "subscriptions", "show", "RE-NOPE")
    assert result.exit_code == 1
    assert ("no subscription with id or recurrentId 'RE-NOPE'; see `npay-billing subscriptions list`"
            in result.stderr)


def test_pause_cancels_waiting_charges_and_resume_bills_again(db):
    sid = subscribe(db, next_charge_at="2026-01-01 00:00:00")
    waiting = add_charge(db, sid, "retry_wait", next_attempt_at="2026-01-01 00:00:00")
    paused = cli(db.url, "subscriptions", "pause", "RE-1")
    assert paused.exit_code == 0 and "active -> paused; canceled 1 charge(s)" in paused.output
    assert db.sql("SELECT status FROM charges WHERE id = :i", i=waiting)[0][0] == "canceled"
    assert "already paused" in cli(db.url, "subscriptions", "pause", "RE-1").output
    resumed = cli_json(db.url, "subscriptions", "resume", str(sid))
    assert resumed["status"] == "active"
    # the cycle that came due while paused is not billed: the walk schedules the next one
    assert db.sql("SELECT next_charge_at FROM subscriptions")[0][0] is None
    assert cli(db.url, "subscriptions", "cancel", "RE-1").exit_code == 0
    refused = cli(db.url, "subscriptions", "resume", "RE-1")
    assert refused.exit_code == 1 and "is canceled, which is final" in refused.stderr


def test_a_revoked_subscription_cannot_be_resumed_or_paused(sqlite_db):
    subscribe(sqlite_db, status="revoked")
    for verb in ("resume", "pause", "cancel"):
        result = cli(sqlite_db.url, "subscriptions", verb, "1")
        assert result.exit_code == 1
        assert ("subscription 1 is revoked: its NAVER Pay registration was expired; "
                "the customer must register again") in result.stderr


def test_resume_of_an_invalid_row_revalidates_it(sqlite_db):
    subscribe(sqlite_db, cron="0 25 * * *", status="invalid", last_error="bad cron",
              next_charge_at="2026-01-01 00:00:00")
    refused = cli(sqlite_db.url, "subscriptions", "resume", "1")
    assert refused.exit_code == 1 and "invalid hour field '25'" in refused.stderr
    sqlite_db.sql("UPDATE subscriptions SET cron = '0 9 * * *'")
    assert cli(sqlite_db.url, "subscriptions", "resume", "1").exit_code == 0
    row = sqlite_db.sql("SELECT status, last_error, next_charge_at FROM subscriptions")[0]
    assert tuple(row) == ("active", None, None)


def test_charges_list_and_show_with_attempts(db):
    sid = subscribe(db)
    cid = add_charge(db, sid, "retry_wait", attempt_count=1, last_code="NotEnoughAccountBalance")
    add_charge(db, sid, "succeeded", cycle="2026-10-01 00:00:00")
    db.sql("INSERT INTO charge_attempts (charge_id, subscription_id, attempt_no, kind, idempotency_key, "
           "outcome, result_code, http_status, raw_body, elapsed_ms) VALUES (:c, :s, 1, 'approve', "
           "'NPB-key-1-approve', 'declined', 'NotEnoughAccountBalance', 200, '{\"code\":\"x\"}', 12)",
           c=cid, s=sid)
    listed = cli_json(db.url, "charges", "list", "--subscription", "RE-1", "--status", "retry_wait")
    assert [c["id"] for c in listed] == [cid]
    shown = cli(db.url, "charges", "show", str(cid))
    assert shown.exit_code == 0
    assert "NPB-key-1-approve" in shown.output and "NotEnoughAccountBalance" in shown.output
    assert '{"code":"x"}' not in shown.output  # raw body only with --raw
    assert '{"code":"x"}' in cli(db.url, "charges", "show", str(cid), "--raw").output
    data = cli_json(db.url, "charges", "show", str(cid))
    assert data["charge"]["status"] == "retry_wait"
    assert [(a["kind"], a["outcome"]) for a in data["attempts"]] == [("approve", "declined")]
    assert "raw_body" not in data["attempts"][0]
    missing = cli(db.url, "charges", "show", "999")
    assert missing.exit_code == 1 and "no charge with id '999'" in missing.stderr


def test_status_counts_lag_and_next_due(db):
    now = datetime.now(UTC)
    overdue = (now - timedelta(seconds=90)).strftime("%Y-%m-%d %H:%M:%S")
    later = (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    sid = subscribe(db, next_charge_at=later)
    subscribe(db, "RE-2", status="revoked")
    add_charge(db, sid, "retry_wait", next_attempt_at=overdue)
    add_charge(db, sid, "unknown", cycle="2026-10-01 00:00:00")
    data = cli_json(db.url, "status")
    assert data["subscriptions"]["active"] == 1 and data["subscriptions"]["revoked"] == 1
    assert data["charges"]["retry_wait"] == 1 and data["unknown_open"] == 1
    assert 85 <= data["walk_lag_seconds"] <= 150
    assert [d["kind"] for d in data["next_due"]] == ["retry", "cycle"]
    text = cli(db.url, "status")
    assert text.exit_code == 0 and "walk lag" in text.output and "next due" in text.output


def test_status_of_an_empty_database_has_no_lag(sqlite_db):
    data = cli_json(sqlite_db.url, "status")
    assert data["walk_lag_seconds"] == 0 and data["next_due"] == []


def test_watch_once_prints_one_line(sqlite_db):
    sid = subscribe(sqlite_db)
    add_charge(sqlite_db, sid, "succeeded")
    result = cli(sqlite_db.url, "watch", "--once")
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) == 1
    assert "succeeded 1 · retrying 0 · failed 0 · expired 0" in result.output


def test_tables_align_korean_text_and_format_money_and_time():
    out = table(["ID", "PRODUCT", "AMOUNT"], [[1, "월간 구독", won(9900)], [22, "Plan", won(1234567)]],
                right=["ID", "AMOUNT"]).splitlines()
    assert out[1] == " 1  월간 구독      9,900원"
    assert out[2] == "22  Plan       1,234,567원"
    assert when(datetime(2026, 1, 1, 0, 0, tzinfo=UTC)) == "2026-01-01 09:00:00 KST"
