"""One NAVER Pay HTTP exchange: send, read with a size cap, decode, classify, report.

This is the only module that touches httpx exceptions and HTTP statuses; it turns all of them
into the classes of ``errors`` (``raise ... from exc``). Whether an answer is a success is
decided by the body's ``code``, never by the HTTP status alone: 200 carries failures, and 409
carries an idempotency *replay* of the first answer, which is treated as that answer.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

import httpx

from worker.naverpay.apis import Api
from worker.naverpay.config import NaverPayConfig
from worker.naverpay.errors import (
    AuthenticationError,
    MalformedResponseError,
    MerchantSideError,
    NaverPayError,
    PermanentError,
    TransientError,
    UnknownOutcomeError,
    error_class_for,
)
from worker.naverpay.parsing import Envelope, ParseError, decode_envelope

__all__ = ["Observer", "Wire", "check_idempotency_key"]

logger = logging.getLogger("worker.naverpay")

Observer = Callable[[str, float, str | None], None]
"""``observer(api_name, elapsed_seconds, code_or_None)``, called after every call."""

T = TypeVar("T")

_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SNIPPET = 200
# Failures that happen before any byte of the request reached NAVER: always safe to resend.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)


def check_idempotency_key(key: str) -> None:
    """NAVER's limits for ``X-NaverPay-Idempotency-Key``: 1-64 of ``[A-Za-z0-9_-]``."""
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"idempotency key must be 1-64 characters of A-Z a-z 0-9 _ -, got {key!r}"
        )


class Wire:
    """Owns the process's HTTP transport (one connection pool) and performs calls described by
    ``Api``."""

    def __init__(
        self,
        config: NaverPayConfig,
        transport: httpx.BaseTransport | None,
        observer: Observer | None,
    ) -> None:
        self._config = config
        self._observer = observer
        short = httpx.Timeout(config.read_timeout, connect=config.connect_timeout,
                              pool=config.connect_timeout)
        long = httpx.Timeout(config.approval_timeout, connect=config.connect_timeout,
                             pool=config.connect_timeout)
        self._timeouts = {False: short.as_dict(), True: long.as_dict()}
        self._base = f"{config.api_base}/"
        self._urls: dict[str, httpx.URL] = {}
        self._headers = {
            "X-Naver-Client-Id": config.client_id,
            "X-Naver-Client-Secret": config.client_secret,
            "User-Agent": "npay-billing",
            "Accept": "*/*",
        }
        # The transport itself, not an ``httpx.Client``: the client's layers (cookie jar,
        # auth flow, redirects, event hooks, URL merging) were a fifth of a charge's CPU and
        # none applies here; redirects are never followed (a redirect means a wrong api_base,
        # and a POST is never resent). Connections are pooled and kept alive by the transport.
        self._transport = transport if transport is not None else default_transport(config.api_base)
        self._closed = False

    def close(self) -> None:
        """Close pooled connections; any later call raises ``RuntimeError``."""
        self._closed = True
        self._transport.close()

    def call(
        self,
        api: Api,
        fields: Mapping[str, object],
        parse: Callable[[Envelope], T],
        *,
        idempotency_key: str | None = None,
        accept: Collection[str] = (),
    ) -> T:
        """Send one request; return ``parse(envelope)`` for Success or an ``accept``ed code."""
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        started = time.perf_counter()
        try:
            env = self._receive(api, fields, idempotency_key)
        except NaverPayError as exc:
            self._report(api, exc.http_status, exc.code, started)
            raise
        self._report(api, env.http_status, env.code, started)
        if env.code != "Success" and env.code not in accept:
            raise self._coded_error(api, env)
        try:
            return parse(env)
        except ParseError as exc:
            raise self._unreadable(api, f"NAVER answered {exc}", env.http_status,
                                   env.text, env.code) from exc

    def _receive(
        self, api: Api, fields: Mapping[str, object], key: str | None
    ) -> Envelope:
        if self._closed:
            raise RuntimeError("Cannot send a request, as the NAVER Pay client has been closed.")
        request = self._build(api, fields, key)
        try:
            response = self._transport.handle_request(request)
            try:
                data = self._read_capped(api, response)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise self._transport_error(api, exc) from exc
        return self._interpret(api, response, data)

    def _build(self, api: Api, fields: Mapping[str, object], key: str | None) -> httpx.Request:
        config = self._config
        chain = config.effective_onetime_chain_id if api.onetime else config.chain_id
        partner = config.effective_onetime_partner_id if api.onetime else config.partner_id
        path = f"{partner}/naverpay/payments/{api.path}"
        headers = dict(self._headers)
        if chain is not None:  # only group-type merchants have one; otherwise no header at all
            headers["X-NaverPay-Chain-Id"] = chain
        if key is not None:
            headers["X-NaverPay-Idempotency-Key"] = key
        present = {name: value for name, value in fields.items() if value is not None}
        url = self._urls.get(path)
        if url is None:  # parsed once per path: httpx's URL parser was a tenth of a charge's CPU
            url = self._urls[path] = httpx.URL(self._base + path)
        extensions = {"timeout": self._timeouts[api.long_timeout]}
        if api.json_body:
            return httpx.Request("POST", url, json=present, headers=headers, extensions=extensions)
        form = {name: str(value) for name, value in present.items()}
        return httpx.Request("POST", url, data=form, headers=headers, extensions=extensions)

    def _read_capped(self, api: Api, response: httpx.Response) -> bytes:
        """The body, refusing more than ``max_body_bytes`` (after content decoding)."""
        cap = self._config.max_body_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise self._oversize(api, response.status_code, f"{declared} bytes")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > cap:
                raise self._oversize(api, response.status_code, f"more than {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _interpret(self, api: Api, response: httpx.Response, data: bytes) -> Envelope:
        status = response.status_code
        ctype = response.headers.get("content-type", "no content type")
        text = self._redact(data[:4096].decode("utf-8", "replace"))
        try:
            env: Envelope | None = decode_envelope(data, http_status=status)
            problem = ""
        except ParseError as exc:
            env, problem = None, str(exc)
        code = env.code if env else None
        where = f"(HTTP {status}, {ctype}): {_snippet(text)}"
        if status == 401:
            raise AuthenticationError(f"{api.title}: NAVER refused the credentials {where}",
                                      api=api.name, code=code, http_status=status, raw=text)
        if status >= 500 and status != 503 and api.kind == "cancel":
            # NAVER's guide: a cancel answered with a 5xx other than 503 may have been carried
            # out (the error can come after the refund); history decides before any resend.
            raise UnknownOutcomeError(f"{api.title}: NAVER answered a server error, the cancel "
                                      f"may have been carried out {where}", api=api.name,
                                      code=code, http_status=status, raw=text)
        if status >= 500 or status == 429:
            # NAVER did not process it; with the same idempotency key a resend is safe.
            raise TransientError(f"{api.title}: NAVER is unavailable {where}", api=api.name,
                                 code=code, http_status=status, raw=text)
        if env is not None:
            return env
        if 300 <= status < 500 and status != 409:
            raise MerchantSideError(f"{api.title}: NAVER refused the request {where}",
                                    api=api.name, http_status=status, raw=text)
        raise self._unreadable(api, f"NAVER answered {problem}", status, text, None, ctype)

    def _coded_error(self, api: Api, env: Envelope) -> NaverPayError:
        cls = error_class_for(api.kind, env.code)
        replay = " replay" if env.replayed else ""
        naver_message = self._redact(env.message)
        return cls(
            f"{api.title}: NAVER answered {env.code} (HTTP {env.http_status}{replay}): "
            f"{_snippet(naver_message)}",
            api=api.name, code=env.code, http_status=env.http_status,
            raw=self._redact(env.text), body=env.body, naver_message=naver_message,
            replayed=env.replayed,
        )

    def _unreadable(self, api: Api, what: str, status: int | None, raw: str | None,
                    code: str | None, ctype: str | None = None) -> NaverPayError:
        """Malformed after a mutating call (outcome unknown); transient after a read."""
        shown = f"HTTP {status}, {ctype}" if ctype else f"HTTP {status}"
        text = self._redact(raw or "")
        cls = MalformedResponseError if api.mutating else TransientError
        return cls(f"{api.title}: {what} ({shown}): {_snippet(text)}", api=api.name, code=code,
                   http_status=status, raw=text)

    def _oversize(self, api: Api, status: int, size: str) -> NaverPayError:
        cap = self._config.max_body_bytes
        return self._unreadable(api, f"NAVER answered a body of {size}, over the {cap}-byte cap",
                                status, None, None)

    def _transport_error(self, api: Api, exc: httpx.HTTPError) -> NaverPayError:
        """The one translation of httpx exceptions, by whether NAVER may have acted."""
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, _NOT_SENT):
            return TransientError(f"{api.title}: could not reach NAVER, nothing was sent "
                                  f"({detail})", api=api.name)
        if isinstance(exc, httpx.UnsupportedProtocol):
            return PermanentError(f"{api.title}: bad api_base ({detail})", api=api.name)
        if isinstance(exc, httpx.DecodingError):
            return self._unreadable(api, f"NAVER's body could not be decoded ({detail})",
                                    None, None, None)
        if not api.mutating:
            return TransientError(f"{api.title}: the answer was lost ({detail}); "
                                  "reading again is safe", api=api.name)
        # The request may have reached NAVER and been carried out: only history can tell.
        return UnknownOutcomeError(
            f"{api.title}: the answer was lost after the request was sent ({detail}); the "
            "outcome is unknown, check payment history before sending anything new",
            api=api.name,
        )

    def _report(self, api: Api, status: int | None, code: str | None, started: float) -> None:
        elapsed = time.perf_counter() - started
        logger.debug("naverpay %s: HTTP %s, code %s, %.1f ms", api.name, status, code,
                     elapsed * 1000)
        if self._observer is None:
            return
        try:
            self._observer(api.name, elapsed, code)
        except Exception:  # a broken metrics hook must not turn a charge into an error
            logger.exception("naverpay observer failed for %s", api.name)

    def _redact(self, text: str) -> str:
        return text.replace(self._config.client_secret, "[redacted]")


def default_transport(api_base: str) -> httpx.BaseTransport:
    """A pooled HTTP transport toward ``api_base``, through the proxy the environment names
    for it (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, ``NO_PROXY``), as ``httpx.Client``
    would. No cap on connections (the worker's threads bound them) and every idle one kept
    alive for its few seconds, so a burst of concurrent charges does not reconnect."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    url = urllib.parse.urlsplit(api_base)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        return httpx.HTTPTransport(limits=limits, proxy=proxy)
    return httpx.HTTPTransport(limits=limits)


def _snippet(text: str) -> str:
    """The start of a text on one line, for error messages."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _SNIPPET else flat[:_SNIPPET] + "..."
