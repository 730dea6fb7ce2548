"""NAVER Pay's registration window, as the sandbox plays it, and the JavaScript SDK that opens it.

NAVER's guide opens the recurrent registration window from the merchant's page with its SDK::

    <script src="https://nsp.pay.naver.com/sdk/js/naverpay.min.js"></script>
    var oPay = Naver.Pay.create({mode, clientId, [chainId], payType: "recurrent"});
    oPay.open({actionType, [targetRecurrentId], productCode, productName, totalPayAmount, returnUrl});

The sandbox serves a shim of that SDK at the same path (``/sdk/js/naverpay.min.js``), so a
merchant page that loads the SDK from the sandbox instead of NAVER works unchanged. Flow::

    merchant page ──oPay.open(params)──▶ POST /window/recurrent/regist      (the SDK shim's form)
        clientId checked, the reservation made with the SDK's parameters (regist/v1/reserve)
    ──303──▶ GET /window/recurrent/regist?reserveId=...   (choose a means, 등록 or 취소)
    ──POST /window/recurrent/regist/decide──▶ 303 to returnUrl with, as NAVER does,
        등록:  resultCode=Success&reserveId=...&tempReceiptId=...       (AUTHORIZED)
        취소:  resultCode=Fail&resultMessage=userCancel&reserveId=...    (CANCELED)
        late:  resultCode=Fail&resultMessage=paymentTimeExpire&...      (regist_window_seconds)
        a means not in the customer's name: resultCode=Fail&resultMessage=OwnerAuthFail

The merchant's server then calls ``recurrent/regist/v1/approval`` with reserveId and
tempReceiptId. With ``openType: "popup"`` the window opens as a popup and, when done, sends
its opener to ``returnUrl`` and closes. Pages are plain HTML in Korean, as NAVER's are.
"""

from __future__ import annotations

import json
from datetime import timedelta
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from sandbox.behaviour import Behaviour
from sandbox.codes import ApiError
from sandbox.records import Reservation, ReservationState
from sandbox.registrations import RegistReserve
from sandbox.state import Runtime, SandboxState

SDK_PATH = "/sdk/js/naverpay.min.js"
WINDOW_PATH = "/window/recurrent/regist"
DECIDE_PATH = "/window/recurrent/regist/decide"

# What the customer may pick in the window: the means, and one that fails NAVER's owner check.
MEANS = {
    "CARD": ("신용카드", "테스트 카드 465887-****-1234", Behaviour(pay_means="CARD")),
    "BANK": ("은행 계좌", "테스트 계좌 우리은행 1234-****-5678", Behaviour(pay_means="BANK")),
    "OTHER_OWNER": ("다른 사람 명의의 카드", "(테스트) 본인 명의가 아닌 카드: OwnerAuthFail", None),
}

SDK_JS = r"""/* NAVER Pay JavaScript SDK shim of the npay-billing sandbox: Naver.Pay.create(...).open(...)
   opens the sandbox's registration window with the parameters NAVER's SDK takes. */
(function (global) {
  "use strict";
  var script = document.currentScript;
  var origin = script ? new URL(script.src, global.location.href).origin : global.location.origin;
  var REQUIRED = ["actionType", "productCode", "productName", "totalPayAmount", "returnUrl"];

  function fail(message) { throw new Error("Naver.Pay (sandbox): " + message); }

  function create(options) {
    options = options || {};
    if (!options.clientId) { fail("create: clientId is required"); }
    var payType = options.payType || "normal";
    return {
      open: function (params) {
        if (payType !== "recurrent") { fail("this sandbox serves payType \"recurrent\" only"); }
        params = params || {};
        REQUIRED.forEach(function (name) {
          if (params[name] === undefined || params[name] === null || params[name] === "") {
            fail("open: " + name + " is required");
          }
        });
        if (params.actionType !== "NEW" && params.actionType !== "CHANGE") {
          fail("open: actionType must be NEW or CHANGE");
        }
        if (params.actionType === "CHANGE" && !params.targetRecurrentId) {
          fail("open: targetRecurrentId is required with actionType CHANGE");
        }
        var openType = options.openType || params.openType || "page";
        var fields = {
          clientId: options.clientId, chainId: options.chainId || "", mode: options.mode || "",
          openType: openType, actionType: params.actionType,
          targetRecurrentId: params.targetRecurrentId || "", productCode: params.productCode,
          productName: params.productName, totalPayAmount: String(params.totalPayAmount),
          returnUrl: params.returnUrl
        };
        var form = document.createElement("form");
        form.method = "POST";
        form.action = origin + "__WINDOW_PATH__";
        form.acceptCharset = "UTF-8";
        form.style.display = "none";
        Object.keys(fields).forEach(function (name) {
          var input = document.createElement("input");
          input.type = "hidden"; input.name = name; input.value = fields[name];
          form.appendChild(input);
        });
        if (openType === "popup") {
          var target = "naverpay_sandbox_" + Date.now();
          if (global.open("", target, "width=460,height=720")) { form.target = target; }
        }
        document.body.appendChild(form);
        form.submit();
      }
    };
  }

  global.Naver = global.Naver || {};
  global.Naver.Pay = { create: create };
})(window);
""".replace("__WINDOW_PATH__", WINDOW_PATH)

_STYLE = """body{font-family:'NanumGothic','Noto Sans KR',sans-serif;background:#f5f6f7;margin:0}
header{background:#03c75a;color:#fff;padding:14px 20px;font-weight:bold;font-size:18px}
main{max-width:420px;margin:24px auto;background:#fff;border-radius:8px;padding:20px 24px;
box-shadow:0 1px 4px rgba(0,0,0,.1)} .amount{font-size:22px;font-weight:bold}
label{display:block;margin:8px 0;padding:10px;border:1px solid #ddd;border-radius:6px}
.buttons{display:flex;gap:8px;margin-top:16px} button{flex:1;padding:12px;font-size:16px;
border-radius:6px;border:0} #confirm{background:#03c75a;color:#fff} #cancel{background:#e5e5e5}
.note{color:#888;font-size:12px;margin-top:16px} .error{color:#c00}"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (f'<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style>'
            f'</head><body><header>N Pay 네이버페이 (샌드박스)</header><main>{body}</main></body></html>')
    return HTMLResponse(html, status_code=status)


def _error(message: str, status: int = 400) -> HTMLResponse:
    body = f'<h2 class="error">요청을 처리할 수 없습니다</h2><p>{escape(message)}</p>'
    return _page("네이버페이 오류", body, status)


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def with_result(return_url: str, result: dict[str, str]) -> str:
    """``return_url`` with NAVER's result parameters added to its own query string."""
    parts = urlsplit(return_url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(result.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check_return_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"returnUrl must be an absolute http(s) URL, got {url!r}")
    return url


def _reserve(state: SandboxState, form: dict[str, str]) -> Reservation:
    """The SDK's parameters -> a registration reservation (what NAVER's SDK does first)."""
    if form.get("clientId") != state.config.client_id:
        raise ValueError("등록되지 않은 가맹점입니다 (clientId가 올바르지 않습니다).")
    missing = [name for name in ("actionType", "productCode", "productName", "totalPayAmount",
                                 "returnUrl") if not form.get(name)]
    if missing:
        raise ValueError(f"필수 파라미터가 없습니다: {', '.join(missing)}")
    action = form["actionType"]
    if action not in ("NEW", "CHANGE"):
        raise ValueError(f"actionType은 NEW 또는 CHANGE여야 합니다: {action!r}")
    amount = form["totalPayAmount"]
    if not amount.isdigit():
        raise ValueError(f"totalPayAmount는 원 단위 정수여야 합니다: {amount!r}")
    request = RegistReserve(
        action_type=action, target_recurrent_id=form.get("targetRecurrentId") or None,
        product_code=form["productCode"], product_name=form["productName"],
        total_pay_amount=int(amount), return_url=_check_return_url(form["returnUrl"]),
    )
    if action == "CHANGE" and request.target_recurrent_id is None:
        raise ValueError("actionType CHANGE에는 targetRecurrentId가 필요합니다.")
    reservation = state.registrations.reserve(request, state.clock())
    reservation.opened_at = state.clock()
    reservation.client_id = form["clientId"]
    return reservation


async def open_window(request: Request) -> Response:
    """POST from the SDK shim: reserve, then show the window (303, so a reload is harmless)."""
    runtime: Runtime = request.app.state.runtime
    form = await _form(request)
    try:
        reservation = _reserve(runtime.state, form)
    except ApiError as exc:  # CHANGE of a registration that is not VALID
        return _error(exc.answer.message or exc.answer.code)
    except ValueError as exc:
        return _error(str(exc))
    query = urlencode({"reserveId": reservation.reserve_id, "openType": form.get("openType", "page")})
    return RedirectResponse(f"{WINDOW_PATH}?{query}", status_code=303)


def _find(state: SandboxState, reserve_id: str) -> Reservation | None:
    return state.registrations.reservations.get(reserve_id)


async def show_window(request: Request) -> Response:
    """The window: what is registered, a choice of means, 등록 and 취소."""
    state: SandboxState = request.app.state.runtime.state
    reserve_id = request.query_params.get("reserveId", "")
    reservation = _find(state, reserve_id)
    if reservation is None:
        return _error("존재하지 않는 등록 요청입니다.", 404)
    if reservation.state is not ReservationState.RESERVED:
        return _error("이미 완료되었거나 취소된 등록 요청입니다.", 409)
    change = reservation.action_type == "CHANGE"
    choices = "".join(
        f'<label><input type="radio" name="means" value="{key}"{" checked" if key == "CARD" else ""}>'
        f' <b>{escape(title)}</b><br><small>{escape(detail)}</small></label>'
        for key, (title, detail, _) in MEANS.items())
    hidden = "".join(f'<input type="hidden" name="{name}" value="{escape(value)}">' for name, value in
                     (("reserveId", reserve_id), ("openType", request.query_params.get("openType", "page"))))
    body = (
        f'<h2 id="title">{"결제수단 변경" if change else "정기결제 결제수단 등록"}</h2>'
        f'<p>{escape(state.config.merchant_name)}</p>'
        f'<p id="product">{escape(reservation.product_name)} ({escape(reservation.product_code)})</p>'
        f'<p class="amount" id="amount">{reservation.total_pay_amount:,}원</p>'
        '<p class="note">등록 시에는 결제되지 않습니다. 표시된 금액은 안내용입니다.</p>'
        f'<form method="post" action="{DECIDE_PATH}">{hidden}<h3>결제수단 선택</h3>{choices}'
        '<div class="buttons"><button id="cancel" name="decision" value="cancel">취소</button>'
        '<button id="confirm" name="decision" value="confirm">등록</button></div></form>'
        '<p class="note">네이버페이 샌드박스: 실제 결제가 일어나지 않는 개발용 화면입니다.</p>'
    )
    return _page("네이버페이 정기결제 등록", body)


def _decide(state: SandboxState, reservation: Reservation, decision: str, means: str) -> dict[str, str]:
    """Apply the user's decision; NAVER's result parameters for ``returnUrl``."""
    now = state.clock()
    limit = timedelta(seconds=state.config.regist_window_seconds)
    base = {"reserveId": reservation.reserve_id}
    if reservation.opened_at is not None and now - reservation.opened_at > limit:
        state.registrations.cancel(reservation.reserve_id)
        return {"resultCode": "Fail", "resultMessage": "paymentTimeExpire", **base}
    if decision != "confirm":
        state.registrations.cancel(reservation.reserve_id)
        return {"resultCode": "Fail", "resultMessage": "userCancel", **base}
    chosen = MEANS.get(means)
    if chosen is None:
        raise ValueError(f"알 수 없는 결제수단입니다: {means!r}")
    behaviour = chosen[2]
    if behaviour is None:  # NAVER's check that the means is the customer's own failed
        state.registrations.cancel(reservation.reserve_id)
        return {"resultCode": "Fail", "resultMessage": "OwnerAuthFail", **base}
    authorized = state.registrations.authorize(reservation.reserve_id, now,
                                               behaviour=Behaviour(**_fields(behaviour)))
    return {"resultCode": "Success", **base, "tempReceiptId": authorized.temp_receipt_id or ""}


def _fields(behaviour: Behaviour) -> dict[str, Any]:
    return {"pay_means": behaviour.pay_means, "card_corp_code": behaviour.card_corp_code}


def _back_to_merchant(url: str, open_type: str) -> Response:
    if open_type != "popup":
        return RedirectResponse(url, status_code=303)
    # A popup sends its opener (the merchant's page) to returnUrl and closes, as NAVER's does.
    script = (f"<script>var u = {_js_string(url)};"
              "if (window.opener && !window.opener.closed) {"
              " window.opener.location.href = u; window.close(); }"
              "else { window.location.href = u; }</script>")
    body = f'<p>가맹점으로 돌아갑니다...</p><p><a href="{escape(url)}">계속</a></p>{script}'
    return _page("네이버페이", body)


def _js_string(text: str) -> str:
    return json.dumps(text).replace("<", "\\u003c")


async def decide(request: Request) -> Response:
    """등록 or 취소 pressed: back to the merchant's ``returnUrl`` with NAVER's result."""
    state: SandboxState = request.app.state.runtime.state
    form = await _form(request)
    reservation = _find(state, form.get("reserveId", ""))
    if reservation is None:
        return _error("존재하지 않는 등록 요청입니다.", 404)
    if reservation.state is not ReservationState.RESERVED:
        return _error("이미 완료되었거나 취소된 등록 요청입니다.", 409)
    try:
        result = _decide(state, reservation, form.get("decision", ""), form.get("means", "CARD"))
    except ValueError as exc:
        return _error(str(exc))
    return _back_to_merchant(with_result(reservation.return_url, result), form.get("openType", "page"))


async def sdk(request: Request) -> Response:
    """The SDK shim (same path as NAVER's ``nsp.pay.naver.com/sdk/js/naverpay.min.js``)."""
    return Response(SDK_JS, media_type="application/javascript; charset=utf-8")


ROUTES = [
    Route(SDK_PATH, sdk, methods=["GET"]),
    Route(WINDOW_PATH, open_window, methods=["POST"]),
    Route(WINDOW_PATH, show_window, methods=["GET"]),
    Route(DECIDE_PATH, decide, methods=["POST"]),
]
"""The registration window and the SDK shim (not subject to NAVER API credentials: the window
checks the SDK's clientId itself, as NAVER's does)."""
