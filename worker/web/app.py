"""The merchant's server side of NAVER Pay registration, as a Starlette (ASGI) app.

Routes::

    GET  /                                the demo merchant's form (plan, customer)       [demo]
    POST /start                           -> the order page with NAVER Pay's button     [demo]
    GET  /subscriptions/{id}/change       -> the same page for a change of means        [demo]
    GET  /registrations/return            NAVER's returnUrl: resultCode, reserveId,
                                          tempReceiptId (or resultMessage) + our state token
    GET  /healthz

Data flow: the order page signs a state token (``state_token``) with what is being subscribed
to and puts it in the ``returnUrl`` it hands to NAVER's SDK; NAVER's window brings the
customer back to that URL with its result; the return endpoint trusts only the token for the
plan, amount, cron and customer, and :class:`~worker.web.registration.Registrar` approves the
registration once. Endpoints are plain ``def``: Starlette runs them in its thread pool, since
the database and NAVER calls block.

``create_app`` is a factory: other apps (e.g. an inbox) can be mounted with ``extra_routes``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from models import Subscription, utcnow
from worker.web import pages
from worker.web.config import WebSettings
from worker.web.flow import DEMO_PLANS, Flow, FlowError, Plan
from worker.web.registration import CHANGEABLE, Outcome, Registrar
from worker.web.state_token import StateTokenError, new_nonce, sign, verify

log = logging.getLogger(__name__)

RETURN_PATH = "/registrations/return"
BAD_REQUEST_CODES = frozenset({"state_invalid", "state_expired", "state_used", "forged_return",
                               "missing_result"})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Web:
    """The endpoints, bound to their collaborators."""

    def __init__(self, registrar: Registrar, settings: WebSettings, plans: Sequence[Plan],
                 clock: Callable[[], datetime]) -> None:
        self.registrar, self.settings, self.plans, self.clock = registrar, settings, plans, clock

    # -- the demo merchant ------------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        return HTMLResponse(pages.index(self.plans))

    async def start(self, request: Request) -> Response:  # no blocking call: signing only
        form = await _form(request)
        plan = next((p for p in self.plans if p.code == form.get("plan")), None)
        user, email, name = (form.get(k, "").strip() for k in ("user", "email", "name"))
        problem = None
        if plan is None:
            problem = "상품을 선택해 주세요."
        elif not user or len(user) > 100:
            problem = "회원 아이디를 1~100자로 입력해 주세요."
        elif email and (len(email) > 200 or not _EMAIL.match(email)):
            problem = "이메일 주소를 확인해 주세요."
        elif len(name) > 100:
            problem = "이름은 100자까지 입력할 수 있습니다."
        if problem is not None or plan is None:
            return HTMLResponse(pages.index(self.plans, problem, form), status_code=400)
        flow = Flow(action="NEW", nonce=new_nonce(), merchant_id=self.settings.merchant_id,
                    product_code=plan.code, product_name=plan.name, amount=plan.amount,
                    merchant_user_id=user, customer_email=email or None, customer_name=name or None,
                    tax_free_amount=plan.tax_free_amount, cron=plan.cron, timezone=plan.timezone)
        return self._checkout(request, flow)

    def change(self, request: Request) -> Response:
        raw = request.path_params["subscription_id"]
        with self.registrar.sessions() as s:
            sub = s.get(Subscription, raw)
        if sub is None or sub.merchant_id != self.settings.merchant_id or sub.status not in CHANGEABLE:
            outcome = Outcome("failed", "CHANGE", "change_not_allowed")
            return HTMLResponse(pages.result(outcome, flow=None, demo=True), status_code=404)
        flow = Flow(action="CHANGE", nonce=new_nonce(), merchant_id=sub.merchant_id,
                    product_code=sub.product_code, product_name=sub.product_name, amount=sub.amount,
                    subscription_id=sub.id, target_recurrent_id=sub.recurrent_id)
        return self._checkout(request, flow)

    def _checkout(self, request: Request, flow: Flow) -> Response:
        """The order page: NAVER's SDK opens the window with a returnUrl carrying the token."""
        s = self.settings
        token = sign(s.secret, flow.to_payload(), now=self.clock(), ttl_seconds=s.state_ttl_seconds)
        base = s.public_url or str(request.base_url).rstrip("/")
        create: dict[str, Any] = {"mode": s.sdk_mode, "clientId": s.client_id, "payType": "recurrent",
                                  "openType": "page"}
        if s.chain_id:
            create["chainId"] = s.chain_id
        params: dict[str, Any] = {"actionType": flow.action, "productCode": flow.product_code,
                                  "productName": flow.product_name, "totalPayAmount": flow.amount,
                                  "returnUrl": f"{base}{RETURN_PATH}?state={token}"}
        if flow.action == "CHANGE":
            params["targetRecurrentId"] = flow.target_recurrent_id
        return HTMLResponse(pages.checkout(flow, sdk_url=s.sdk_url, create=create, open_params=params))

    # -- NAVER's returnUrl ------------------------------------------------------------------------

    def registration_return(self, request: Request) -> Response:
        query = request.query_params
        try:
            flow = Flow.from_payload(verify(self.settings.secret, query.get("state", ""), now=self.clock()))
        except StateTokenError as exc:
            log.warning("registration return refused: %s", exc)
            code = "state_expired" if exc.reason == "expired" else "state_invalid"
            return self._result(Outcome("failed", code=code, detail=str(exc)), None)
        except FlowError as exc:
            log.warning("registration return refused: %s", exc)
            return self._result(Outcome("failed", code="state_invalid", detail=str(exc)), None)
        if query.get("resultCode") != "Success":
            reason = query.get("resultMessage") or None
            log.info("registration %s ended in NAVER's window: %s %s", flow.action,
                     query.get("resultCode"), reason)
            return self._result(Outcome("failed", flow.action, reason), flow, naver_message=reason)
        outcome = self.registrar.complete(flow, query.get("reserveId", ""), query.get("tempReceiptId", ""))
        return self._result(outcome, flow)

    def _result(self, outcome: Outcome, flow: Flow | None, naver_message: str | None = None) -> Response:
        status = 400 if outcome.code in BAD_REQUEST_CODES else 200
        html = pages.result(outcome, flow=flow, naver_message=naver_message, demo=self.settings.demo)
        return HTMLResponse(html, status_code=status)


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded form body (Starlette's own parser needs python-multipart)."""
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def healthz(request: Request) -> Response:
    """Liveness."""
    return PlainTextResponse("ok")


def create_app(registrar: Registrar, settings: WebSettings, *, plans: Sequence[Plan] = DEMO_PLANS,
               clock: Callable[[], datetime] = utcnow, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The app: ``returnUrl`` always, the demo merchant's pages when ``settings.demo``."""
    web = _Web(registrar, settings, plans, clock)
    routes: list[BaseRoute] = [Route(RETURN_PATH, web.registration_return, methods=["GET"]),
                               Route("/healthz", healthz, methods=["GET"])]
    if settings.demo:
        routes += [Route("/", web.index, methods=["GET"]), Route("/start", web.start, methods=["POST"]),
                   Route("/subscriptions/{subscription_id:int}/change", web.change, methods=["GET"])]
    app = Starlette(routes=[*routes, *extra_routes])
    app.state.web = web
    return app
