"""``npay-billing metrics``: serve the Prometheus metrics."""

from __future__ import annotations

import click

from worker.cli.support import Env


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9808, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.pass_obj
def metrics(env: Env, host: str, port: int) -> None:
    """Serve Prometheus metrics on http://HOST:PORT/metrics until Ctrl-C.

    Database gauges (charges and subscriptions by status, unknown outcomes open, registrations
    expired, notifications pending, the walk's lag) are read at scrape time; the workers'
    counters (charges by outcome, retries, NAVER API latency) are aggregated from
    PROMETHEUS_MULTIPROC_DIR when it is set (set the same directory for the workers).
    """
    from worker.metrics_server import serve

    sessions = env.sessions()
    click.echo(f"metrics on http://{host}:{port}/metrics (Ctrl-C to stop)", err=True)
    try:
        serve(sessions, host, port)
    except KeyboardInterrupt:
        pass
