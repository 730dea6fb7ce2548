"""Output of the operator CLI: aligned tables for people, JSON for scripts.

People read times in Asia/Seoul with the zone (``2026-05-01 09:00:00 KST``) and amounts with
thousands separators and 원 (``9,900원``). Scripts get ``--json``: ISO-8601 UTC times, plain
integers of won. Table columns are aligned by *display* width, so Korean product names (two
terminal cells per character) line up with Latin text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

KST = ZoneInfo("Asia/Seoul")
NONE = "-"


def when(value: datetime | None) -> str:
    """An instant as Seoul wall time with its zone, or ``-``."""
    if value is None:
        return NONE
    return value.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S %Z")


def clock_time(value: datetime | None) -> str:
    """Only the Seoul time of day (compact views), or ``-``."""
    if value is None:
        return NONE
    return value.astimezone(KST).strftime("%H:%M:%S")


def won(amount: int | None) -> str:
    """``9900`` -> ``9,900원``."""
    return NONE if amount is None else f"{amount:,}원"


def duration(seconds: float) -> str:
    """A short human duration: ``0s``, ``42s``, ``3m05s``, ``2h03m``, ``1d02h``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def iso(value: datetime | None) -> str | None:
    """An instant as ISO-8601 UTC for JSON."""
    return None if value is None else value.astimezone(UTC).isoformat()


def plain(value: Any) -> Any:
    """``value`` made JSON-serialisable (datetimes as ISO-8601 UTC)."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON (Korean left readable)."""
    click.echo(json.dumps(plain(data), ensure_ascii=False, indent=2))


def width(text: str) -> int:
    """Terminal cells ``text`` takes: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, cells: int, right: bool) -> str:
    gap = " " * (cells - width(text))
    return gap + text if right else text + gap


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[str] = ()) -> str:
    """Rows as aligned columns under ``headers``; columns named in ``right`` align right."""
    cells = [[NONE if v is None else str(v) for v in row] for row in rows]
    widths = [width(h) for h in headers]
    for row in cells:
        widths = [max(w, width(v)) for w, v in zip(widths, row, strict=True)]
    flags = [h in right for h in headers]
    lines = ["  ".join(_pad(h, w, r) for h, w, r in zip(headers, widths, flags, strict=True))]
    lines += ["  ".join(_pad(v, w, r) for v, w, r in zip(row, widths, flags, strict=True))
              for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``label  value`` lines with the values aligned (one record, shown vertically)."""
    cells = max((width(label) for label, _ in pairs), default=0)
    return "\n".join(f"{_pad(label, cells, False)}  {NONE if v is None else v}" for label, v in pairs)
