"""The HTML the customer sees: the demo merchant's pages and the registration result, in Korean.

Everything interpolated is escaped (``html.escape`` for markup, JSON with ``<`` escaped for the
SDK call's arguments), so a product name or a NAVER message cannot inject markup.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from worker.web.flow import Flow, Plan
from worker.web.registration import Outcome

_STYLE = """body{font-family:'NanumGothic','Noto Sans KR',sans-serif;background:#fafafa;margin:0;color:#222}
header{background:#333;color:#fff;padding:14px 20px;font-size:18px;font-weight:bold}
main{max-width:520px;margin:24px auto;background:#fff;border-radius:8px;padding:20px 28px;
box-shadow:0 1px 4px rgba(0,0,0,.12)} label{display:block;margin:8px 0}
input[type=text],input[type=email]{width:100%;padding:8px;box-sizing:border-box}
.plan{border:1px solid #ddd;border-radius:6px;padding:10px;margin:6px 0}
button{padding:12px 18px;font-size:16px;border-radius:6px;border:0;background:#333;color:#fff}
#npay-button{background:#03c75a;width:100%} .ok{color:#03a14a} .error{color:#c00}
dt{color:#777;font-size:13px} dd{margin:0 0 8px 0} .note{color:#888;font-size:12px}"""


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html lang="ko"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style>'
            f'</head><body><header>데모 상점 (npay-billing)</header><main>{body}</main></body></html>')


def _js(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def won(amount: int) -> str:
    """``9,900원``."""
    return f"{amount:,}원"


def index(plans: Sequence[Plan], error: str | None = None, values: Mapping[str, str] | None = None) -> str:
    """The demo merchant's subscription form: a plan and the customer."""
    values = values or {}
    chosen = values.get("plan", plans[0].code if plans else "")
    options = "".join(
        f'<label class="plan"><input type="radio" name="plan" value="{escape(p.code)}"'
        f'{" checked" if p.code == chosen else ""}> <b>{escape(p.name)}</b> {won(p.amount)}'
        f'<br><small>{escape(p.description)}</small></label>' for p in plans)
    problem = f'<p class="error" id="form-error">{escape(error)}</p>' if error else ""

    def field(name: str, label: str, kind: str = "text") -> str:
        return (f'<label>{label}<input type="{kind}" name="{name}" id="{name}" '
                f'value="{escape(values.get(name, "") if values else "")}"></label>')

    body = (f'<h2>정기결제 구독 신청</h2>{problem}<form method="post" action="/start">'
            f'<h3>상품</h3>{options}<h3>고객 정보</h3>'
            f'{field("user", "회원 아이디")}{field("email", "이메일 (선택)", "email")}'
            f'{field("name", "이름 (선택)")}'
            '<p><button type="submit" id="start">다음</button></p></form>'
            '<p class="note">데모용 상점 화면입니다. 결제수단은 네이버페이 창에서 등록합니다.</p>')
    return _page("정기결제 구독 신청", body)


def checkout(flow: Flow, *, sdk_url: str, create: Mapping[str, Any], open_params: Mapping[str, Any]) -> str:
    """The page with NAVER Pay's button: the SDK opens the registration window on click."""
    change = flow.action == "CHANGE"
    rows = [("상품", f"{flow.product_name} ({flow.product_code})"), ("금액", won(flow.amount))]
    if not change:
        rows.append(("회원", flow.merchant_user_id))
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    title = "결제수단 변경" if change else "주문 확인"
    button = "네이버페이로 결제수단 변경" if change else "네이버페이 정기결제 등록"
    body = (f'<h2>{title}</h2><dl id="order">{details}</dl>'
            f'<p><button type="button" id="npay-button">{button}</button></p>'
            '<p class="note">등록할 때는 결제되지 않습니다. 정해진 주기에 상점이 결제를 요청합니다.</p>'
            f'<script src="{escape(sdk_url)}"></script>'
            f'<script>var oPay = Naver.Pay.create({_js(create)});'
            'document.getElementById("npay-button").addEventListener("click", function () {'
            f'oPay.open({_js(open_params)});}});</script>')
    return _page(title, body)


def result(outcome: Outcome, *, flow: Flow | None, naver_message: str | None = None,
           demo: bool = True) -> str:
    """The end of the flow: what happened, in plain Korean."""
    if outcome.status == "completed":
        rows = [("구독 번호", str(outcome.subscription_id))]
        if flow is not None:
            rows += [("상품", flow.product_name), ("금액", won(flow.amount))]
        details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
        change = (f'<p><a id="change-link" href="/subscriptions/{outcome.subscription_id}/change">'
                  '결제수단 변경</a></p>') if demo else ""
        body = (f'<h2 class="ok" id="result-title">완료</h2>'
                f'<p id="result-message">{escape(outcome.message)}</p><dl>{details}</dl>{change}')
        return _page("등록 완료", body)
    heading = "처리 중" if outcome.status == "pending" else "등록하지 못했습니다"
    reason = ""
    if naver_message and outcome.code not in _KNOWN:
        reason = f'<p id="naver-reason">사유: {escape(naver_message)}</p>'
    again = '<p><a id="again-link" href="/">처음으로</a></p>' if demo else ""
    body = (f'<h2 class="error" id="result-title">{heading}</h2>'
            f'<p id="result-message">{escape(outcome.message)}</p>{reason}{again}')
    return _page(heading, body)


def _known() -> frozenset[str]:
    from worker.web.messages import NAVER_RESULTS, OURS

    return frozenset(NAVER_RESULTS) | frozenset(OURS)


_KNOWN = _known()
