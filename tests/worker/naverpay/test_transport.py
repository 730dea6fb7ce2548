"""The client's own HTTP transport (no ``httpx.Client``): what the client gave us must stay.

``httpx.Client`` routed requests through the proxy the environment names (``HTTP_PROXY``,
``HTTPS_PROXY``, ``ALL_PROXY``, bypassed by ``NO_PROXY``); the transport the client builds
itself must do the same, checked here with a real forward proxy on loopback in front of the
sandbox.
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.worker.naverpay.conftest import reserve, sandbox_client
from worker.naverpay import NaverPayError


class _Proxy(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: absolute-form request line in, the origin's answer out."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append(self.path)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(self.path, data=body, headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy loop
        try:
            with opener.open(request, timeout=10) as answer:
                status, data, ctype = answer.status, answer.read(), answer.headers.get("content-type")
        except urllib.error.HTTPError as exc:
            status, data, ctype = exc.code, exc.read(), exc.headers.get("content-type")
        self.send_response(status)
        self.send_header("content-type", ctype or "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[str]:
    _Proxy.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _call(url: str) -> None:
    client = sandbox_client(url)
    try:
        reserve(client, "NO-SUCH-REGISTRATION")
    except NaverPayError as exc:  # NAVER's refusal of an unknown registration is an answer too
        assert exc.http_status is not None, exc
    finally:
        client.close()


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_calls_go_through_the_proxy_the_environment_names(
        sandbox_url: str, proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    _call(sandbox_url)
    assert _Proxy.seen and all(path.startswith(sandbox_url + "/") for path in _Proxy.seen)


def test_no_proxy_bypasses_it_and_no_variable_means_direct(
        sandbox_url: str, proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    _call(sandbox_url)
    _clear_proxies(monkeypatch)
    _call(sandbox_url)
    assert _Proxy.seen == []
