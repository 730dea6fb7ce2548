"""``python -m sandbox``: serve the NAVER Pay simulator (see ``--help``).

Every option of :class:`sandbox.config.SandboxConfig` has a flag here (``chain_ids`` is
``--chain-id``, repeatable); the same options can be changed at run time through
``POST /_sandbox/config``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from sandbox.config import CHOICES, HELP, SandboxConfig
from sandbox.server import run

_DESCRIPTION = """\
A local simulator of the NAVER Pay 결제형 server APIs (recurrent payments first).
Serves POST /{partnerId}/naverpay/payments/... with NAVER's envelope and result codes, and a
control API under /_sandbox (health, reset, registrations, onetime-payments, faults, config,
clock, ledger). State lives in memory and is lost on exit."""


def _flag(name: str) -> str:
    return "--chain-id" if name == "chain_ids" else "--" + name.replace("_", "-")


def _add_option(parser: argparse.ArgumentParser, field: dataclasses.Field[Any]) -> None:
    default = field.default
    kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
    if field.name == "chain_ids":
        kwargs.update(action="append", metavar="ID")
    elif isinstance(default, bool):
        kwargs.update(action=argparse.BooleanOptionalAction)
    elif field.name in CHOICES:
        kwargs.update(choices=CHOICES[field.name])
    elif isinstance(default, int | float):
        kwargs.update(type=type(default), metavar="N")
    elif default is None:
        kwargs.update(type=float, metavar="N")
    else:
        kwargs.update(metavar="CODE" if field.name.endswith("_code") else "TEXT")
    shown = ", ".join(default) if isinstance(default, tuple) else default
    parser.add_argument(_flag(field.name), help=f"{HELP[field.name]} (default: {shown})", **kwargs)


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    cli = argparse.ArgumentParser(prog="python -m sandbox", description=_DESCRIPTION)
    cli.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    cli.add_argument("--port", type=int, default=8055, help="port to listen on (default: %(default)s)")
    cli.add_argument("--log-level", default="warning",
                     choices=("critical", "error", "warning", "info", "debug"),
                     help="uvicorn log level; the access log is always off (default: %(default)s)")
    for field in dataclasses.fields(SandboxConfig):
        _add_option(cli, field)
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted."""
    args = vars(parser().parse_args(argv))
    run(args.pop("host"), args.pop("port"), log_level=args.pop("log_level"), **args)


if __name__ == "__main__":
    main()
