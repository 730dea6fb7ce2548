"""Helpers for the CLI tests: invoke ``npay-billing`` in-process, insert rows with plain SQL."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from worker.cli import main


def cli(url: str, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``npay-billing --database-url URL ARGS...`` and return click's result."""
    return CliRunner().invoke(main, ["--database-url", url, *args], env=env, catch_exceptions=False)


def cli_json(url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run a command with ``--json``; it must succeed and print valid JSON."""
    result = cli(url, *args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def subscribe(db: Any, recurrent_id: str = "RE-1", **columns: Any) -> int:
    """Insert a subscription the way a user would (plain SQL); returns its id."""
    cols = {"recurrent_id": recurrent_id, "merchant_user_id": "user-1", "product_code": "PLAN-M",
            "product_name": "월간 구독", "amount": 9900, "cron": "0 9 1 * *", **columns}
    db.sql(f"INSERT INTO subscriptions ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})",
           **cols)
    return int(db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=recurrent_id)[0][0])


def add_charge(db: Any, subscription_id: int, status: str = "pending", cycle: str = "2026-11-01 00:00:00",
               **columns: Any) -> int:
    """Insert a charge row for ``subscription_id`` (as the walk would have); returns its id."""
    rid = db.sql("SELECT recurrent_id FROM subscriptions WHERE id = :i", i=subscription_id)[0][0]
    cols = {"subscription_id": subscription_id, "recurrent_id": rid, "cycle_at": cycle,
            "merchant_pay_id": f"NPB-{subscription_id}-{cycle}", "amount": 9900, "status": status,
            **columns}
    db.sql(f"INSERT INTO charges ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})", **cols)
    return int(db.sql("SELECT max(id) FROM charges")[0][0])
