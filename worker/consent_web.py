"""The consent link's pages, as Starlette routes for ``npay-billing web`` to mount.

    GET  /consent/{token}   the change in Korean (product, old and new amount, date, what
                            happens without consent, how to cancel) and an "agree" button
    POST /consent/{token}   records the consent (``worker.consent.record_consent``, via "link")

GET never records anything: mail scanners and link previews open links, so consent takes the
customer's own POST. The token is signed (HMAC-SHA256, ``BILLING_CONSENT_SECRET``) and expires;
a bad or expired one gets 400/410 and a page saying what to do. Usage::

    from worker.consent_web import consent_routes
    app = Starlette(routes=[*consent_routes(sessions, settings.consent), ...])
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from models import PriceChange, Subscription, utcnow
from models import PriceChangeStatus as PCS
from worker.consent import NO_LINK, ConsentConfig, ConsentError, notice_text, read_token, record_consent

log = logging.getLogger(__name__)
WITHDRAWN = "판매자가 이 금액 변경을 취소했습니다. 동의가 필요하지 않습니다."

PAGE = """<!doctype html>
<html lang="ko"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=html.escape(title), body=body), status_code=status)


def consent_routes(sessions: sessionmaker[Session], config: ConsentConfig,
                   clock: Callable[[], datetime] = utcnow) -> list[Route]:
    """The two routes of the consent link, bound to a database and the link's secret."""

    def _change_id(request: Request) -> int:
        if not config.secret:
            raise ConsentError("consent links are not configured (BILLING_CONSENT_SECRET)")
        return read_token(config.secret, str(request.path_params["token"]), clock())

    async def show(request: Request) -> HTMLResponse:
        try:
            change_id = _change_id(request)
        except ConsentError as exc:
            return _refused(exc)
        with sessions() as session:
            change = session.get(PriceChange, change_id)
            sub = session.get(Subscription, change.subscription_id) if change else None
            if change is None or sub is None:
                return _page("동의 링크 오류", "<p>해당 변경 내역을 찾을 수 없습니다.</p>", 404)
            if change.status == PCS.CANCELED:
                return _page("변경 취소됨", f"<p>{WITHDRAWN}</p>")
            old = change.old_amount if change.old_amount is not None else (sub.agreed_amount or 0)
            text = notice_text(change, sub, sub.merchant, old, None).replace(NO_LINK, "")
        if change.consented_at is not None:
            return _page("동의 완료", f"<p>{html.escape(text)}</p><p>이미 동의하셨습니다.</p>")
        # No action: the form posts to this very URL, wherever the app mounts these routes.
        form = '<form method="post"><button type="submit">위 내용에 동의합니다</button></form>'

        return _page("정기결제 변경 동의", f"<p>{html.escape(text)}</p>{form}")

    async def agree(request: Request) -> HTMLResponse:
        try:
            change_id = _change_id(request)
            with sessions.begin() as session:
                record_consent(session, change_id, clock(), "link")
        except ConsentError as exc:
            return _refused(exc, 409 if "withdrawn" in str(exc) else None)
        log.info("price change %s: consent given through the link", change_id)
        return _page("동의 완료", "<p>동의가 기록되었습니다. 감사합니다.</p>")

    return [Route("/consent/{token}", show, methods=["GET"]),
            Route("/consent/{token}", agree, methods=["POST"])]


def _refused(exc: ConsentError, status: int | None = None) -> HTMLResponse:
    message = str(exc)
    if status is None:
        status = 410 if "expired" in message else 404 if "no price change" in message else 400
    korean = {410: "동의 링크가 만료되었습니다. 판매자에게 새 링크를 요청해 주세요.",
              404: "해당 변경 내역을 찾을 수 없습니다.",
              409: WITHDRAWN}.get(
        status, "유효하지 않은 동의 링크입니다.")
    return _page("동의 링크 오류", f"<p>{html.escape(korean)}</p><p>{html.escape(message)}</p>", status)
