"""``python -m sandbox``: serve the NAVER Pay simulator (see ``--help``).

Every option of :class:`sandbox.config.SandboxConfig` has a flag here (``chain_ids`` is
``--chain-id``, repeatable), built from :func:`sandbox.config.options`, the same definition
``npay-billing sandbox`` is built from; the same options can be changed at run time through
``POST /_sandbox/config``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from sandbox.config import SERVER_DEFAULTS, Option, options
from sandbox.server import run

_DESCRIPTION = """\
A local simulator of the NAVER Pay 결제형 server APIs (recurrent payments first).
Serves POST /{partnerId}/naverpay/payments/... with NAVER's envelope and result codes, and a
control API under /_sandbox (health, reset, registrations, onetime-payments, faults, config,
clock, ledger). State lives in memory and is lost on exit."""

_TYPES: dict[str, type] = {"int": int, "float": float}


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    # Options not given stay out of the namespace: SandboxConfig's defaults then apply.
    kwargs: dict[str, Any] = {"dest": option.name, "default": argparse.SUPPRESS, "help": option.help}
    if option.kind == "texts":
        kwargs.update(action="append", metavar=option.metavar)
    elif option.kind == "switch":
        kwargs.update(action=argparse.BooleanOptionalAction)
    elif option.kind == "choice":
        kwargs.update(choices=option.choices)
    else:
        kwargs.update(metavar=option.metavar)
        if option.kind in _TYPES:
            kwargs.update(type=_TYPES[option.kind])
    parser.add_argument(option.flag, **kwargs)


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    cli = argparse.ArgumentParser(prog="python -m sandbox", description=_DESCRIPTION)
    for option in options():
        _add_option(cli, option)
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted."""
    args = {**SERVER_DEFAULTS, **vars(parser().parse_args(argv))}
    run(args.pop("host"), args.pop("port"), log_level=args.pop("log_level"), **args)


if __name__ == "__main__":
    main()
