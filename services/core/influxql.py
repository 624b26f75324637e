"""InfluxQL reads (``/query``), the one read path InfluxDB 1.x, 2.x (DBRP) and 3.x all serve."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from services.core.settings import InfluxSettings


class QueryError(RuntimeError):
    pass


def quote_str(value: str) -> str:
    """A string literal for InfluxQL (single quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def query(s: InfluxSettings, q: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Run one statement; return its series (each with name, tags, columns, values)."""
    params = {"db": s.database, "q": q, "epoch": "ms"}
    headers = {}
    if s.token is not None:
        headers["Authorization"] = f"Token {s.token.get_secret_value()}"
    elif s.username:
        params.update(u=s.username, p=s.password.get_secret_value() if s.password else "")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as ses, \
                ses.get(s.url.rstrip("/") + "/query", params=params, headers=headers) as r:
            text = await r.text()
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise QueryError(f"InfluxDB at {s.url}: {type(exc).__name__}: {exc}") from exc
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise QueryError(f"InfluxDB answered HTTP {status}: {text[:200]}") from exc
    result = (body.get("results") or [{}])[0]
    if status != 200 or "error" in result or "error" in body:
        raise QueryError(str(result.get("error") or body.get("error") or f"HTTP {status}"))
    series: list[dict[str, Any]] = result.get("series") or []
    return series
