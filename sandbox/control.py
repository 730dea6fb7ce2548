"""The control API under ``/_sandbox``: what tests and benchmarks use to script the fake NAVER.

Never subject to credentials, faults or maintenance. Bad input answers HTTP 400
``{"error": ...}``; an unknown id HTTP 404. Endpoints:

- ``GET /_sandbox/health``, ``POST /_sandbox/reset``
- ``POST /_sandbox/registrations`` (a VALID registration with a ``behaviour`` script;
  ``registYmdt`` backdates it)
- ``POST /_sandbox/registrations/{reserveId}/authorize`` (the user completed the page)
- ``POST /_sandbox/registrations/{recurrentId}/expire`` (the customer ended it in NAVER Pay:
  EXPIRED, requester 1, ``expireReason`` optional)
- ``POST /_sandbox/registrations/{recurrentId}/behaviour`` (replace the script)
- ``POST /_sandbox/onetime-payments`` (an authenticated one-time payment awaiting approval)
- ``GET|POST /_sandbox/faults``, ``GET|POST /_sandbox/config``, ``GET|POST /_sandbox/clock``
- ``GET|POST /_sandbox/cancel-script`` (``{"steps": [...]}``: what the next cancels do, see
  ``faults.CancelStep``: a 5xx before or after the refund, a held answer, a scripted code)
- ``GET /_sandbox/ledger[?recurrentId=]``
- ``POST /_sandbox/inject`` (a reconciliation mismatch: see ``sandbox.inject``)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import config as options
from sandbox.behaviour import Behaviour
from sandbox.clock import parse_ymdt, ymdt
from sandbox.codes import ApiError
from sandbox.faults import Faults, cancel_script
from sandbox.inject import inject
from sandbox.ledger import ledger
from sandbox.payments import check_order
from sandbox.records import Order, Registration
from sandbox.state import Runtime

Endpoint = Callable[[Request, Runtime], Awaitable[dict[str, Any]]]


class NotFound(LookupError):
    """An id in the path that the sandbox does not know."""


def _endpoint(fn: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            result = await fn(request, request.app.state.runtime)
        except NotFound as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except ApiError as exc:
            return JSONResponse({"error": exc.answer.message, "code": exc.answer.code}, 400)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    endpoint.__doc__ = fn.__doc__
    return endpoint


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)  # json.JSONDecodeError is a ValueError: HTTP 400
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _text(data: dict[str, Any], name: str, default: str) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


async def health(request: Request, runtime: Runtime) -> dict[str, Any]:
    """The sandbox is up."""
    return {"ok": True}


async def reset(request: Request, runtime: Runtime) -> dict[str, Any]:
    """Forget everything and return to the start options."""
    runtime.reset()
    return {"ok": True}


async def create_registration(request: Request, runtime: Runtime) -> dict[str, Any]:
    """A VALID registration without the browser flow."""
    data = await _json(request)
    state = runtime.state
    registration = state.registrations.create(
        merchant_user_id=_text(data, "merchantUserId", "sandbox-user"),
        product_code=_text(data, "productCode", "SANDBOX-PLAN"),
        product_name=_text(data, "productName", "샌드박스 정기결제"),
        behaviour=Behaviour.from_json(data.get("behaviour")),
        now=state.clock(),
        recurrent_id=data.get("recurrentId"),
        registered_at=parse_ymdt(_text(data, "registYmdt", "x")) if "registYmdt" in data else None,
    )
    return {"recurrentId": registration.recurrent_id}


async def authorize_registration(request: Request, runtime: Runtime) -> dict[str, Any]:
    """The user completed the registration page: a tempReceiptId for regist approval."""
    data = await _json(request)
    state = runtime.state
    reserve_id = request.path_params["reserveId"]
    if reserve_id not in state.registrations.reservations:
        raise NotFound(f"unknown reserveId {reserve_id}")
    behaviour = Behaviour.from_json(data["behaviour"]) if "behaviour" in data else None
    reservation = state.registrations.authorize(
        reserve_id, state.clock(), merchant_user_id=data.get("merchantUserId"),
        behaviour=behaviour,
    )
    return {"reserveId": reserve_id, "tempReceiptId": reservation.temp_receipt_id}


def _registration(runtime: Runtime, request: Request) -> Registration:
    recurrent_id = request.path_params["recurrentId"]
    registration = runtime.state.registrations.by_id.get(recurrent_id)
    if registration is None:
        raise NotFound(f"unknown recurrentId {recurrent_id}")
    return registration


async def expire_registration(request: Request, runtime: Runtime) -> dict[str, Any]:
    """The user removed the registration in the NAVER Pay app (requester 1)."""
    data = await _json(request)
    registration = _registration(runtime, request)
    reason = _text(data, "expireReason", "사용자 해지")
    runtime.state.registrations.expire(registration.recurrent_id, "1", reason, runtime.state.clock())
    return {"recurrentId": registration.recurrent_id, "state": registration.state.value}


async def replace_behaviour(request: Request, runtime: Runtime) -> dict[str, Any]:
    """Give an existing registration a new approval script."""
    registration = _registration(runtime, request)
    registration.behaviour = Behaviour.from_json(await _json(request))
    return {"recurrentId": registration.recurrent_id, "behaviour": registration.behaviour.to_json()}


def _amount(data: dict[str, Any], name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


async def create_onetime(request: Request, runtime: Runtime) -> dict[str, Any]:
    """A one-time payment the buyer authenticated, awaiting ``v2.2/apply/payment``."""
    data = await _json(request)
    state = runtime.state
    total = _amount(data, "totalPayAmount")
    tax_ex = _amount(data, "taxExScopeAmount", 0)
    order = Order(
        total=total, tax_scope=_amount(data, "taxScopeAmount", total - tax_ex),
        tax_ex_scope=tax_ex, product_name=_text(data, "productName", "샌드박스 상품"),
        merchant_pay_id=_text(data, "merchantPayKey", f"onetime-{len(state.payments.by_id) + 1}"),
        merchant_user_id=_text(data, "merchantUserKey", "sandbox-user"),
    )
    check_order(order, state.config)
    payment = state.payments.create_onetime(order, state.clock())
    return {"paymentId": payment.payment_id}


async def faults(request: Request, runtime: Runtime) -> dict[str, Any]:
    """GET: the active global faults. POST: replace them (``{}`` clears)."""
    if request.method == "POST":
        runtime.state.faults = Faults.from_json(await _json(request))
    return runtime.state.faults.to_json()


async def cancel_steps(request: Request, runtime: Runtime) -> dict[str, Any]:
    """GET: the cancel steps not consumed yet. POST: replace them (``{}`` clears)."""
    if request.method == "POST":
        runtime.state.cancel_script = cancel_script(await _json(request))
    return {"steps": [step.to_json() for step in runtime.state.cancel_script]}


async def config(request: Request, runtime: Runtime) -> dict[str, Any]:
    """GET: the options in force. POST: change some of them (all or nothing)."""
    if request.method == "POST":
        options.apply(runtime.state.config, await _json(request))
    return options.to_json(runtime.state.config)


async def clock(request: Request, runtime: Runtime) -> dict[str, Any]:
    """GET: the sandbox time. POST ``{"advanceSeconds": n}``: move it forward (windows, delays)."""
    state = runtime.state
    if request.method == "POST":
        seconds = (await _json(request)).get("advanceSeconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ValueError("advanceSeconds must be a number")
        state.clock.advance(seconds)
    return {"now": ymdt(state.clock()), "offsetSeconds": state.clock.offset.total_seconds()}


async def inject_mismatch(request: Request, runtime: Runtime) -> dict[str, Any]:
    """Make NAVER's books differ from the merchant's (one mismatch per call)."""
    try:
        return inject(runtime.state, await _json(request))
    except LookupError as exc:
        raise NotFound(str(exc)) from None


async def show_ledger(request: Request, runtime: Runtime) -> dict[str, Any]:
    """Every payment and registration, optionally only those of ``?recurrentId=``."""
    return ledger(runtime.state, request.query_params.get("recurrentId") or None)


ROUTES = [
    Route("/_sandbox/health", _endpoint(health), methods=["GET"]),
    Route("/_sandbox/reset", _endpoint(reset), methods=["POST"]),
    Route("/_sandbox/registrations", _endpoint(create_registration), methods=["POST"]),
    Route("/_sandbox/registrations/{reserveId:path}/authorize",
          _endpoint(authorize_registration), methods=["POST"]),
    Route("/_sandbox/registrations/{recurrentId}/expire",
          _endpoint(expire_registration), methods=["POST"]),
    Route("/_sandbox/registrations/{recurrentId}/behaviour",
          _endpoint(replace_behaviour), methods=["POST"]),
    Route("/_sandbox/onetime-payments", _endpoint(create_onetime), methods=["POST"]),
    Route("/_sandbox/faults", _endpoint(faults), methods=["GET", "POST"]),
    Route("/_sandbox/cancel-script", _endpoint(cancel_steps), methods=["GET", "POST"]),
    Route("/_sandbox/config", _endpoint(config), methods=["GET", "POST"]),
    Route("/_sandbox/clock", _endpoint(clock), methods=["GET", "POST"]),
    Route("/_sandbox/ledger", _endpoint(show_ledger), methods=["GET"]),
    Route("/_sandbox/inject", _endpoint(inject_mismatch), methods=["POST"]),
]
"""The control routes, mounted before the NAVER API routes."""
