"""NaverPayConfig: defaults, the environment, and keeping the secret out of sight."""

from __future__ import annotations

import pytest

from worker.naverpay import NaverPayConfig

SECRET = "env-secret-Kq81"


def test_defaults_point_at_the_local_sandbox() -> None:
    config = NaverPayConfig()

    assert config.api_base == "http://127.0.0.1:8055"
    assert config.partner_id == "naverpay-partner"
    assert (config.client_id, config.client_secret) == ("sandbox-client-id",
                                                         "sandbox-client-secret")
    # Chain ids are issued to group-type merchants only: none by default, no header sent.
    assert (config.chain_id, config.onetime_chain_id) == (None, None)
    assert config.effective_onetime_chain_id is None
    assert (config.connect_timeout, config.read_timeout, config.approval_timeout) == (3, 10, 60)
    assert config.max_body_bytes == 1_048_576


def test_from_env_reads_every_variable() -> None:
    config = NaverPayConfig.from_env({
        "NAVERPAY_API_BASE": "https://dev-pay.paygate.naver.com/",
        "NAVERPAY_PARTNER_ID": "np_abc123",
        "NAVERPAY_CLIENT_ID": "cid",
        "NAVERPAY_CLIENT_SECRET": SECRET,
        "NAVERPAY_CHAIN_ID": "rec-chain",
        "NAVERPAY_ONETIME_CHAIN_ID": "one-chain",
        "NAVERPAY_CONNECT_TIMEOUT": "1.5",
        "NAVERPAY_READ_TIMEOUT": "7",
        "NAVERPAY_APPROVAL_TIMEOUT": "45",
    })

    assert config == NaverPayConfig(
        api_base="https://dev-pay.paygate.naver.com", partner_id="np_abc123", client_id="cid",
        client_secret=SECRET, chain_id="rec-chain", onetime_chain_id="one-chain",
        connect_timeout=1.5, read_timeout=7.0, approval_timeout=45.0)
    assert config.effective_onetime_chain_id == "one-chain"


def test_unset_or_empty_variables_keep_the_defaults() -> None:
    assert NaverPayConfig.from_env({"NAVERPAY_READ_TIMEOUT": "", "NAVERPAY_CHAIN_ID": ""}) == (
        NaverPayConfig())
    assert NaverPayConfig.from_env({}) == NaverPayConfig()


def test_blank_chain_id_variables_mean_no_chain_id() -> None:
    config = NaverPayConfig.from_env({"NAVERPAY_CHAIN_ID": "  ", "NAVERPAY_ONETIME_CHAIN_ID": ""})

    assert (config.chain_id, config.onetime_chain_id) == (None, None)


def test_a_onetime_chain_id_alone_applies_to_onetime_apis_only() -> None:
    config = NaverPayConfig.from_env({"NAVERPAY_ONETIME_CHAIN_ID": "one-chain"})

    assert (config.chain_id, config.effective_onetime_chain_id) == (None, "one-chain")


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf", "10s"])
def test_bad_numbers_name_the_variable_and_the_value(value: str) -> None:
    with pytest.raises(ValueError, match=f"NAVERPAY_APPROVAL_TIMEOUT.*{value!r}"):
        NaverPayConfig.from_env({"NAVERPAY_APPROVAL_TIMEOUT": value})


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="api_base"):
        NaverPayConfig(api_base="127.0.0.1:8055")
    with pytest.raises(ValueError, match="client_id"):
        NaverPayConfig(client_id="")
    with pytest.raises(ValueError, match="chain_id must be None"):
        NaverPayConfig(chain_id="")  # an empty header would be sent; None means no chain id
    with pytest.raises(ValueError, match="onetime_chain_id"):
        NaverPayConfig(onetime_chain_id=" ")
    with pytest.raises(ValueError, match="max_body_bytes"):
        NaverPayConfig(max_body_bytes=0)


def test_the_secret_is_not_in_repr_or_str() -> None:
    config = NaverPayConfig.from_env({"NAVERPAY_CLIENT_SECRET": SECRET})

    assert config.client_secret == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert "client_id='sandbox-client-id'" in repr(config)


def test_the_onetime_partner_id_comes_from_the_environment_and_falls_back() -> None:
    config = NaverPayConfig.from_env({"NAVERPAY_PARTNER_ID": "np_rec",
                                      "NAVERPAY_ONETIME_PARTNER_ID": "np_one"})
    assert (config.partner_id, config.effective_onetime_partner_id) == ("np_rec", "np_one")
    alone = NaverPayConfig.from_env({"NAVERPAY_PARTNER_ID": "np_rec", "NAVERPAY_ONETIME_PARTNER_ID": " "})
    assert (alone.onetime_partner_id, alone.effective_onetime_partner_id) == (None, "np_rec")
    with pytest.raises(ValueError, match="onetime_partner_id must be None"):
        NaverPayConfig(onetime_partner_id="")
