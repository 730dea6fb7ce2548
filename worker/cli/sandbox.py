"""``npay-billing sandbox``: run the local NAVER Pay simulator.

Its options are built from ``sandbox.config.options()``, the definition ``python -m sandbox``
is built from, so the two commands offer the same switches (credentials, faults, windows).

Credentials follow the worker's: unless given on the command line (or ``--builtin-credentials``),
the sandbox accepts ``NAVERPAY_CLIENT_ID`` / ``NAVERPAY_CLIENT_SECRET`` and the chain ids
``NAVERPAY_CHAIN_ID`` / ``NAVERPAY_ONETIME_CHAIN_ID`` when those are set, so a worker and a
sandbox started in the same environment agree (else the worker gets 401 ``InvalidMerchant``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import click

from sandbox.config import SERVER_DEFAULTS, Option, options

# Sandbox option -> the worker's environment variable it follows (see NaverPayConfig.from_env).
FROM_ENV = {"client_id": "NAVERPAY_CLIENT_ID", "client_secret": "NAVERPAY_CLIENT_SECRET"}
CHAIN_ENV = ("NAVERPAY_CHAIN_ID", "NAVERPAY_ONETIME_CHAIN_ID")
_TYPES: dict[str, Any] = {"int": int, "float": float, "text": str}


def _click_option(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    help_text = option.help[:1].upper() + option.help[1:] + "."
    env = FROM_ENV.get(option.name) or (" and $".join(CHAIN_ENV) if option.name == "chain_ids" else None)
    if env:
        help_text += f" Unless given: ${env} when set."
    if option.kind == "switch":
        flag = option.flag[2:]
        return click.option(f"--{flag}/--no-{flag}", option.name, default=None, help=help_text)
    kwargs: dict[str, Any] = {"default": None, "help": help_text}
    if option.kind == "texts":
        kwargs.update(multiple=True, default=(), metavar=option.metavar)
    elif option.kind == "choice":
        kwargs.update(type=click.Choice(option.choices))
    else:
        kwargs.update(type=_TYPES[option.kind], metavar=option.metavar)
    return click.option(option.flag, option.name, **kwargs)


def run_options(given: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The keyword options for ``sandbox.server.run``: what was given on the command line,
    then the worker's credentials from ``environ`` for what was not."""
    chosen = {name: value for name, value in given.items() if value not in (None, ())}
    for name, var in FROM_ENV.items():
        if name not in chosen and environ.get(var):
            chosen[name] = environ[var]
    chains = [environ[var].strip() for var in CHAIN_ENV if (environ.get(var) or "").strip()]
    if "chain_ids" not in chosen and chains:
        chosen["chain_ids"] = tuple(dict.fromkeys(chains))
    return {**SERVER_DEFAULTS, **chosen}


def _describe(opts: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    source = ("from NAVERPAY_CLIENT_ID" if environ.get("NAVERPAY_CLIENT_ID") == opts.get("client_id")
              else "given" if "client_id" in opts else "built in")
    client = opts.get("client_id", "sandbox-client-id")
    return f"NAVER Pay sandbox on http://{opts['host']}:{opts['port']}, client id {client} ({source})"


def sandbox_command() -> click.Command:
    """The click command, with one option per entry of ``sandbox.config.options()``."""

    def sandbox(builtin_credentials: bool, **given: Any) -> None:
        """Run the local NAVER Pay sandbox (a faithful simulator) until Ctrl-C.

        Point the worker at it with NAVERPAY_API_BASE=http://HOST:PORT (the default). It
        accepts the worker's credentials: NAVERPAY_CLIENT_ID, NAVERPAY_CLIENT_SECRET and
        NAVERPAY_CHAIN_ID / NAVERPAY_ONETIME_CHAIN_ID when set (options on the command line
        win). Every option of `python -m sandbox` is here too; the same settings can be
        changed while it runs with POST /_sandbox/config.
        """
        from sandbox.server import run

        environ = {} if builtin_credentials else os.environ
        opts = run_options(given, environ)
        click.echo(_describe(opts, environ) + " (Ctrl-C to stop)", err=True)
        try:
            run(opts.pop("host"), opts.pop("port"), log_level=opts.pop("log_level"), **opts)
        except KeyboardInterrupt:
            pass

    command: Callable[..., Any] = sandbox
    for option in reversed(options()):
        command = _click_option(option)(command)
    command = click.option("--builtin-credentials", is_flag=True,
                           help="Ignore NAVERPAY_CLIENT_ID/SECRET/CHAIN_ID: accept the sandbox's "
                                "built-in credentials (or those given here) only.")(command)
    return click.command(name="sandbox")(command)


sandbox = sandbox_command()
