"""The state token: only what we signed, unchanged and in time, is trusted."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.web.conftest import new_flow
from worker.web.flow import Flow, FlowError
from worker.web.state_token import StateTokenError, sign, verify

SECRET = b"0123456789abcdef-test-secret"
NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def test_a_token_carries_the_flow_unchanged() -> None:
    flow = new_flow(customer_name="김네이버", amount=9900)

    token = sign(SECRET, flow.to_payload(), now=NOW, ttl_seconds=600)

    assert Flow.from_payload(verify(SECRET, token, now=NOW + timedelta(seconds=599))) == flow


def test_an_expired_token_is_refused() -> None:
    token = sign(SECRET, new_flow().to_payload(), now=NOW, ttl_seconds=600)

    with pytest.raises(StateTokenError) as info:
        verify(SECRET, token, now=NOW + timedelta(seconds=600))
    assert info.value.reason == "expired"


def _edit(token: str, **changes: object) -> str:
    version, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{version}.{edited}.{signature}"


@pytest.mark.parametrize("changes", [{"amount": 100}, {"cron": "* * * * *"}, {"exp": 4102444800},
                                     {"merchant_user_id": "someone-else"}])
def test_an_edited_payload_is_refused_as_forged(changes: dict[str, object]) -> None:
    token = sign(SECRET, new_flow().to_payload(), now=NOW, ttl_seconds=600)

    with pytest.raises(StateTokenError) as info:
        verify(SECRET, _edit(token, **changes), now=NOW)
    assert info.value.reason == "forged"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = sign(b"another-secret-of-16-bytes", new_flow().to_payload(), now=NOW, ttl_seconds=600)

    with pytest.raises(StateTokenError, match="signature") as info:
        verify(SECRET, token, now=NOW)
    assert info.value.reason == "forged"


@pytest.mark.parametrize("token", ["", "v1", "v1..", "v2.e30.abc", "v1.e30", "garbage.with.dots.x"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(StateTokenError) as info:
        verify(SECRET, token, now=NOW)
    assert info.value.reason in ("malformed", "forged")


def test_a_short_secret_is_refused_when_signing() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        sign(b"short", {}, now=NOW, ttl_seconds=60)


def test_each_start_gets_its_own_nonce() -> None:
    first = verify(SECRET, sign(SECRET, {"a": 1}, now=NOW, ttl_seconds=60), now=NOW)
    second = verify(SECRET, sign(SECRET, {"a": 1}, now=NOW, ttl_seconds=60), now=NOW)

    assert first["nonce"] != second["nonce"]


@pytest.mark.parametrize(("payload", "complaint"), [
    ({"action": "NEW", "merchant_id": 1, "product_code": "P", "product_name": "N"}, "lacks nonce"),
    ({**new_flow().to_payload(), "amount": "9900"}, "amount is not a int"),
    ({**new_flow().to_payload(), "action": "DELETE"}, "not NEW or CHANGE"),
    ({**new_flow().to_payload(), "action": "CHANGE"}, "needs subscription_id"),
])
def test_a_payload_that_is_not_a_flow_names_what_is_wrong(payload: dict[str, object], complaint: str) -> None:
    with pytest.raises(FlowError, match=complaint):
        Flow.from_payload(payload)
