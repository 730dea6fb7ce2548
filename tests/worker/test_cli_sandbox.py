"""``npay-billing sandbox``: every option of ``python -m sandbox``, and the worker's credentials.

Issue 9: with ``NAVERPAY_CLIENT_ID``/``SECRET``/``CHAIN_ID`` set for the worker, the sandbox
started in the same environment must accept them (it answered 401 ``InvalidMerchant``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import httpx
import pytest
from click.testing import CliRunner

from sandbox.__main__ import parser
from tests.services import ROOT, free_port, wait_until
from worker.cli import main
from worker.cli.sandbox import run_options
from worker.naverpay import NaverPayClient, NaverPayConfig
from worker.naverpay.errors import AuthenticationError

WORKER_ENV = {"NAVERPAY_CLIENT_ID": "shop-client-id", "NAVERPAY_CLIENT_SECRET": "shop-secret-9Qx",
              "NAVERPAY_CHAIN_ID": "shop-recurrent-chain"}


def test_every_python_m_sandbox_option_is_an_option_of_npay_billing_sandbox():
    flags = {flag for action in parser()._actions for flag in action.option_strings} - {"-h", "--help"}
    shown = CliRunner().invoke(main, ["sandbox", "--help"], terminal_width=200).output
    command = main.commands["sandbox"]
    offered = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}

    assert len(flags) > 25  # faults, windows and credentials, not only host and port
    assert flags <= offered, sorted(flags - offered)
    assert all(flag in shown for flag in flags), sorted(f for f in flags if f not in shown)


def test_options_not_given_follow_the_worker_environment():
    env = {**WORKER_ENV, "NAVERPAY_ONETIME_CHAIN_ID": "shop-onetime-chain"}

    options = run_options({"client_id": None, "chain_ids": (), "maintenance": "503"}, env)

    assert options == {"host": "127.0.0.1", "port": 8055, "log_level": "warning",
                       "client_id": "shop-client-id", "client_secret": "shop-secret-9Qx",
                       "chain_ids": ("shop-recurrent-chain", "shop-onetime-chain"),
                       "maintenance": "503"}


def test_options_given_win_over_the_environment_and_an_empty_environment_changes_nothing():
    given = run_options({"client_id": "cli-id", "chain_ids": ("cli-chain",)}, WORKER_ENV)
    assert (given["client_id"], given["client_secret"], given["chain_ids"]) == (
        "cli-id", "shop-secret-9Qx", ("cli-chain",))
    assert run_options({}, {"NAVERPAY_CLIENT_ID": "", "NAVERPAY_CHAIN_ID": " "}) == {
        "host": "127.0.0.1", "port": 8055, "log_level": "warning"}


@contextmanager
def npay_billing_sandbox(env: Mapping[str, str], *args: str) -> Iterator[str]:
    port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NAVERPAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from worker.cli import main; main()", "sandbox", "--port", str(port), *args],
        cwd=ROOT, env={**base_env, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/_sandbox/health", timeout=0.5).status_code == 200,
                   timeout=20, what="npay-billing sandbox")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _worker_client(url: str) -> NaverPayClient:
    """The client exactly as the worker builds it from the same environment."""
    return NaverPayClient(NaverPayConfig.from_env({**WORKER_ENV, "NAVERPAY_API_BASE": url}))


def test_a_worker_and_a_sandbox_started_with_the_same_environment_agree():
    with npay_billing_sandbox(WORKER_ENV) as url, _worker_client(url) as client:
        page = client.list_registrations(recurrent_id="20261128RE0000000000AAAAAA")
        config = httpx.get(f"{url}/_sandbox/config").json()

    assert page.total_count == 0
    assert (config["clientId"], config["chainIds"]) == ("shop-client-id", ["shop-recurrent-chain"])
    assert config["clientSecret"] == "[redacted]"  # a real secret taken from the environment


def test_builtin_credentials_ignore_the_environment():
    with npay_billing_sandbox(WORKER_ENV, "--builtin-credentials") as url, _worker_client(url) as client:
        with pytest.raises(AuthenticationError):
            client.list_registrations(recurrent_id="20261128RE0000000000AAAAAA")
