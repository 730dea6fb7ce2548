"""The HTTP layer: Starlette routes, and the pipeline every NAVER API call goes through.

Pipeline of one call to ``POST /{partnerId}/naverpay/payments/{api}`` (any partnerId, any host):

1. credentials: wrong id/secret -> HTTP 401 (or 200 ``InvalidMerchant``), unknown chain id ->
   HTTP 200 ``InvalidMerchant``; no chain id is fine unless ``requireChainId`` is on (NAVER
   issues chain ids to group-type merchants only), else HTTP 200 ``InvalidMerchant``;
2. fields from the query string and the body (form or JSON);
3. idempotency (APIs that honour it): a repeated key gets HTTP 409 with the first answer's
   bytes, or ``AlreadyOnGoing`` while the first still runs; the key is echoed on every answer;
4. outages: the maintenance switch (HTTP 503 or 200 ``MaintenanceOngoing``), then the seeded
   global faults (5xx, ``MaintenanceOngoing``) and their fixed latency;
5. the handler, which answers an :class:`~sandbox.codes.Answer` (business failures are HTTP 200).

Non-final answers (5xx, ``MaintenanceOngoing``, ``AlreadyOnGoing``) release the key unless the
``storeNonFinal`` option is on; every other answer is stored as the key's answer.

Per request the work is a few dict lookups and one JSON encode; nothing is logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sandbox import api_payments, api_recurrent, control, window
from sandbox.codes import Answer, ApiError, Code, fail
from sandbox.context import ApiSpec, Ctx, IdempotencySlot
from sandbox.idempotency import MAX_KEY_LENGTH
from sandbox.params import Params, parse
from sandbox.state import Runtime, SandboxState

JSON_TYPE = b"application/json;charset=UTF-8"
IDEMPOTENCY_HEADER = "X-NaverPay-Idempotency-Key"
IDEMPOTENCY_HEADER_RAW = IDEMPOTENCY_HEADER.lower().encode()

API_ROUTES: Mapping[str, ApiSpec] = {**api_recurrent.ROUTES, **api_payments.ROUTES}
_HISTORY_BY_ID = api_payments.HISTORY_BY_ID_PREFIX


def resolve(path: str) -> tuple[ApiSpec, str] | None:
    """The API served at ``path`` (after ``/naverpay/payments/``) and its path argument."""
    spec = API_ROUTES.get(path)
    if spec is not None:
        return spec, ""
    if path.startswith(_HISTORY_BY_ID):
        payment_id = path[len(_HISTORY_BY_ID):]
        if payment_id and "/" not in payment_id:
            return API_ROUTES["v2.3/list/history"], payment_id
    return None


def check_credentials(state: SandboxState, headers: Mapping[str, str]) -> Answer | None:
    """The answer to a call with wrong credentials, or None if they are right."""
    config = state.config
    if (headers.get("x-naver-client-id") != config.client_id
            or headers.get("x-naver-client-secret") != config.client_secret):
        status = 401 if config.bad_credentials == "401" else 200
        return fail(Code.INVALID_MERCHANT, "인증 정보가 올바르지 않습니다.", status=status)
    chain = headers.get("x-naverpay-chain-id", "").strip()
    if not chain:
        # NAVER's guide (2-2) issues chain ids "to group-type merchants only", so a merchant
        # without one sends no header. What NAVER answers a group-type merchant that omits
        # it is not documented: InvalidMerchant (HTTP 200, as for a wrong chain id) is
        # inferred from the integrations that map header/chain problems to it
        # (naverpay-api.md §2, [N7]), not confirmed. RequireParameter would be the other guess.
        if config.require_chain_id:
            return fail(Code.INVALID_MERCHANT, "체인 아이디가 필요합니다.")
        return None
    if chain not in config.chain_ids:
        return fail(Code.INVALID_MERCHANT, "유효하지 않은 체인 아이디입니다.")
    return None


def outage(state: SandboxState, api: str = "") -> Answer | None:
    """The maintenance switch's answer, or a global fault's, or None to process the call."""
    mode = state.config.maintenance
    if mode != "off":
        return fail(Code.MAINTENANCE_ONGOING, status=503 if mode == "503" else 200)
    return state.faults.draw(api)


async def _serve(spec: ApiSpec, ctx: Ctx) -> Answer:
    # Outages come after the idempotency claim, so storeNonFinal applies to them too.
    interrupted = outage(ctx.state, ctx.api)
    if interrupted is not None:
        return interrupted
    if ctx.state.faults.latency_ms:
        await asyncio.sleep(ctx.state.faults.latency_ms / 1000)
    try:
        return await spec.handler(ctx)
    except ApiError as exc:
        return exc.answer


async def _serve_once(spec: ApiSpec, ctx: Ctx, client_id: str, key: str) -> tuple[int, bytes]:
    """Serve a call at most once per (client id, key); repeats get HTTP 409."""
    state = ctx.state
    extra = state.config.extra_response_fields
    if len(key) > MAX_KEY_LENGTH:
        answer = fail(Code.INVALID_PARAMETER, f"{IDEMPOTENCY_HEADER}는 최대 64자입니다.")
        return answer.status, answer.encode(extra)
    scope = (client_id, key)
    replay = state.idempotency.begin(scope, state.config.idempotency_retention_seconds)
    if replay is not None:
        return 409, replay.body or fail(Code.ALREADY_ON_GOING).encode(extra)
    ctx.slot = slot = IdempotencySlot(state, scope)
    try:
        answer = await _serve(spec, ctx)
    except BaseException:  # a crash or a cancelled request must not keep the key claimed
        slot.abandon()
        raise
    encoded = answer.encode(state.config.extra_response_fields)
    slot.finish(answer, encoded)  # a no-op if the handler settled early (held response)
    return answer.status, encoded


async def _process(
    state: SandboxState, scope: Scope, body: bytes, spec: ApiSpec, path_arg: str,
    headers: Mapping[str, str], key: str | None,
) -> tuple[int, bytes]:
    extra = state.config.extra_response_fields
    refused = check_credentials(state, headers)
    if refused is not None:
        return refused.status, refused.encode(extra)
    try:
        fields = parse(scope["query_string"], body, headers.get("content-type", ""))
    except ApiError as exc:
        return 400, exc.answer.encode(extra)
    ctx = Ctx(state, Params(fields), path_arg=path_arg, api=scope["path_params"]["rest"])
    if key is None or not spec.idempotent:
        answer = await _serve(spec, ctx)
        return answer.status, answer.encode(extra)
    return await _serve_once(spec, ctx, headers.get("x-naver-client-id", ""), key)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class NaverApi:
    """The ASGI endpoint of every NAVER API path.

    Raw ASGI rather than a Starlette ``Request``/``Response`` pair: this is the hot path of the
    worker's benchmarks, and the objects it skips cost more than the API logic itself.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"]}
        body = await _read_body(receive)
        key = headers.get("x-naverpay-idempotency-key")
        resolved = resolve(scope["path_params"]["rest"])
        if resolved is None:
            status, content = 404, fail(Code.NOT_FOUND, status=404).encode()
        else:
            state = self.runtime.state  # read once: a reset meanwhile must not mix two states
            status, content = await _process(state, scope, body, *resolved, headers, key)
        raw = [(b"content-type", JSON_TYPE), (b"content-length", str(len(content)).encode())]
        if key is not None:
            raw.append((IDEMPOTENCY_HEADER_RAW, key.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})


def build_app(runtime: Runtime) -> Starlette:
    """The Starlette application serving ``runtime``: NAVER APIs, the control API, and the
    registration window with its SDK shim (``sandbox.window``)."""
    routes = [
        # First: it is the hot path, and its pattern never matches /_sandbox/... paths.
        Route("/{partner}/naverpay/payments/{rest:path}", NaverApi(runtime), methods=["POST"]),
        *control.ROUTES,
        *window.ROUTES,  # NAVER's registration window and its JavaScript SDK (shim)
    ]
    app = Starlette(routes=routes)
    app.state.runtime = runtime
    return app
