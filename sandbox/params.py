"""Request fields: read from the query string and the body (form or JSON), checked NAVER's way.

Several integrations put form fields in the query string of an empty POST, and NAVER accepts
that (naverpay-api.md §5.3), so both are merged (the body wins). Unknown fields are ignored.
Missing fields answer ``RequireParameter``; malformed ones ``InvalidParameter``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from sandbox.codes import ApiError, Code


def parse(query: bytes, body: bytes, content_type: str) -> dict[str, Any]:
    """Fields of one request; ApiError InvalidParameter if a JSON body is not an object."""
    fields: dict[str, Any] = _form(query.decode("latin-1")) if query else {}
    if not body:
        return fields
    if "json" in content_type or ("form" not in content_type and body.lstrip()[:1] == b"{"):
        fields.update(_json_object(body))
    else:
        fields.update(_form(body.decode("utf-8", "replace")))
    return fields


def _form(text: str) -> dict[str, str]:
    # parse_qsl, minus its generality: this runs on every request of the benchmarks.
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(name), unquote_plus(value)
        fields[name] = value
    return fields


def _json_object(body: bytes) -> Mapping[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ApiError(Code.INVALID_PARAMETER, "JSON 형식이 올바르지 않습니다.") from exc
    if not isinstance(data, dict):
        raise ApiError(Code.INVALID_PARAMETER, "JSON 객체가 필요합니다.")
    return data


class Params:
    """Typed access to request fields."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields

    def require(self, *names: str) -> None:
        """RequireParameter naming the first of ``names`` that is missing or blank."""
        for name in names:
            value = self.fields.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ApiError(Code.REQUIRE_PARAMETER, f"필수 파라미터가 누락되었습니다. ({name})")

    def text(self, name: str) -> str:
        """A required field as a string."""
        self.require(name)
        return str(self.fields[name]).strip()

    def optional(self, name: str, default: str = "") -> str:
        """An optional field as a string (``default`` when missing or blank)."""
        value = self.fields.get(name)
        if value is None or not str(value).strip():
            return default
        return str(value).strip()

    def amount(self, name: str, default: int | None = None) -> int:
        """A whole, non-negative number of won (required unless ``default`` is given)."""
        if default is not None and self.fields.get(name) in (None, ""):
            return default
        self.require(name)
        return _whole(name, self.fields[name], minimum=0)

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        """An optional whole number within ``low..high``."""
        if self.fields.get(name) in (None, ""):
            return default
        number = _whole(name, self.fields[name], minimum=low)
        if high is not None and number > high:
            raise ApiError(Code.INVALID_PARAMETER, f"{name}은(는) {low}~{high} 사이여야 합니다.")
        return number

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        """One of ``allowed`` (required unless ``default`` is given)."""
        value = self.optional(name) or default
        if value is None:
            self.require(name)
        if value not in allowed:
            raise ApiError(
                Code.INVALID_PARAMETER, f"{name}은(는) {'|'.join(allowed)} 중 하나여야 합니다."
            )
        return value


def _whole(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool):
        raise ApiError(Code.INVALID_PARAMETER, f"{name}은(는) 정수여야 합니다.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise ApiError(Code.INVALID_PARAMETER, f"{name}은(는) 정수여야 합니다.")
    if value < minimum:
        raise ApiError(Code.INVALID_PARAMETER, f"{name}은(는) {minimum} 이상이어야 합니다.")
    return value
