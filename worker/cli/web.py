"""``npay-billing web``: serve the merchant's registration pages and NAVER's ``returnUrl``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from worker.cli.support import Env, SetupError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from worker.web.registration import Registrar


def build_registrar(env: Env) -> Registrar:
    """A :class:`Registrar` on the CLI's database with the worker's per-merchant clients."""
    from worker.runtime import Runtime
    from worker.settings import Settings
    from worker.web.registration import Registrar

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    sessions = env.sessions()
    runtime = Runtime(settings=settings, engine=env.engine(), sessions=sessions)
    return Registrar(sessions=sessions, client_for=runtime.client_for, lease=settings.lease)


def web_app(env: Env) -> Starlette:
    """The app ``npay-billing web`` serves: registration (demo page, returnUrl) and the consent
    links of price-change notices (``/consent/<token>``, worker/consent_web.py)."""
    from worker.consent_web import consent_routes
    from worker.settings import Settings
    from worker.web import WebSettings, create_app

    registrar = build_registrar(env)
    try:
        settings = Settings.from_env()
        web_settings = WebSettings.from_env(settings.naverpay)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    return create_app(registrar, web_settings,
                      extra_routes=consent_routes(env.sessions(), settings.consent))


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="WEB_HOST",
              help="Address to listen on (env WEB_HOST).")
@click.option("--port", default=8060, show_default=True, type=click.IntRange(1, 65535), envvar="WEB_PORT",
              help="Port to listen on (env WEB_PORT).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.pass_obj
def web(env: Env, host: str, port: int, log_level: str) -> None:
    """Serve NAVER Pay registration until Ctrl-C: the demo merchant page (http://HOST:PORT/),
    which opens NAVER Pay's registration window, and the returnUrl endpoint
    (/registrations/return) that approves the registration and creates the subscription.

    \b
    Settings (environment): WEB_STATE_SECRET (sign state tokens; set it in production),
    WEB_PUBLIC_URL (the returnUrl's scheme and host), NAVERPAY_SDK_URL, NAVERPAY_SDK_MODE,
    WEB_STATE_TTL_SECONDS, WEB_DEMO=0 (returnUrl only). In development the page loads the
    SDK from the sandbox (NAVERPAY_API_BASE), whose window stands in for NAVER's.
    Also serves the consent links of price-change notices (/consent/TOKEN; BILLING_CONSENT_SECRET,
    BILLING_PUBLIC_URL = this server's public address).
    """
    import uvicorn

    app = web_app(env)
    click.echo(f"registration pages on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="off",
                    server_header=False)
    except KeyboardInterrupt:
        pass
