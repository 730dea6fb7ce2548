"""``npay-billing sandbox``: run the local NAVER Pay simulator."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8055, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--auto-register", is_flag=True,
              help="Accept any unknown recurrentId as a registration made in NAVER Pay's window "
                   "(demos: rows inserted with SQL get charged). `make run` turns it on.")
@click.option("--chain-id", "chain_ids", multiple=True, metavar="ID",
              help="Accepted X-NaverPay-Chain-Id (repeatable; default: sandbox-chain-id and "
                   "sandbox-recurrent-chain-id). Calls sending another one are InvalidMerchant.")
@click.option("--require-chain-id", is_flag=True,
              help="Refuse calls without X-NaverPay-Chain-Id (a group-type merchant). Off by "
                   "default: NAVER issues chain ids to group-type merchants only.")
def sandbox(host: str, port: int, log_level: str, auto_register: bool,
            chain_ids: tuple[str, ...], require_chain_id: bool) -> None:
    """Run the local NAVER Pay sandbox (a faithful simulator) until Ctrl-C.

    Point the worker at it with NAVERPAY_API_BASE=http://HOST:PORT (the default).
    More switches (faults, windows, credentials): `python -m sandbox --help`.
    """
    from sandbox.server import run

    options: dict[str, object] = {"auto_register": auto_register,
                                  "require_chain_id": require_chain_id}
    if chain_ids:
        options["chain_ids"] = chain_ids
    click.echo(f"NAVER Pay sandbox on http://{host}:{port} (Ctrl-C to stop)", err=True)
    try:
        run(host, port, log_level=log_level, **options)
    except KeyboardInterrupt:
        pass
