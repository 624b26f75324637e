"""The one InfluxDB client: every request Lifeline makes to InfluxDB goes through here.

- v1 HTTP API (InfluxDB 1.x; 2.x and 3.x serve it too): ``/write`` (line protocol, with
  ``precision`` and ``rp``), ``/query`` (InfluxQL, epoch ms) and ``/ping``;
- v2 writes (``/api/v2/write``, token, org, bucket) through ``influxdb-client``.

Authentication in one place: a token goes in ``Authorization: Token …`` (what 2.x's v1
compatibility API and 3.x read), else username/password as ``u``/``p`` parameters.

The policy in one place too. Timeouts: :data:`WRITE_TIMEOUT_S`, :data:`QUERY_TIMEOUT_S`,
:data:`SETUP_TIMEOUT_S`, :data:`PING_TIMEOUT_S` (callers may pass their own). Retries: this
client never retries by itself; it says whether trying again can help —
:class:`InfluxUnavailable` (unreachable, timeout, 401/403/404, 429, 5xx: retry the same
request later; the writer backs off, services/writer/batch.py) or :class:`InfluxRefused`
(400/422: the data or the statement itself, retrying cannot help) and its
:class:`InfluxTooLarge` (413: smaller parts may pass). A query raises :class:`QueryError`
(:class:`QueryRefused` when the database answered with an error for the statement).

The asynchronous client (aiohttp) serves the services; :func:`query_sync` and
:func:`ping_sync` (urllib, no event loop) serve the local stack's manager and load bench.
Both build the same requests and read answers with the same code.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

from schemas.storage import DATABASE
from services.core.errors import LifelineError
from services.core.settings import InfluxSettings

WRITE_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 5.0
SETUP_TIMEOUT_S = 15.0
PING_TIMEOUT_S = 2.0

Precision = str  # "ms" (Lifeline's default), "ns" (the on-call trail), "s", "u"
Series = dict[str, Any]


class InfluxError(LifelineError):
    """Base of the InfluxDB client's errors."""


class InfluxUnavailable(InfluxError):
    """The database is down, overloaded or refusing us for now: retry the same request."""


class InfluxRefused(InfluxError):
    """The database refused the data itself (a bad line, a field type conflict, a point
    outside the retention policy; HTTP 400/422)."""


class InfluxTooLarge(InfluxRefused):
    """The request was too large (HTTP 413): smaller parts of it may be stored."""


class QueryError(InfluxError):
    """A query failed: unreachable, timed out, or refused (:class:`QueryRefused`)."""


class QueryRefused(QueryError):
    """The database answered the statement with an error (syntax, a conflict, …)."""


@dataclass(frozen=True)
class Endpoint:
    """Where InfluxDB's v1 API is and how to sign in."""

    url: str
    database: str = DATABASE
    username: str | None = None
    password: str = ""
    token: str | None = None

    @classmethod
    def of(cls, s: InfluxSettings | Endpoint) -> Endpoint:
        if isinstance(s, Endpoint):
            return s
        return cls(s.url.rstrip("/"), s.database, s.username,
                   s.password.get_secret_value() if s.password else "",
                   s.token.get_secret_value() if s.token is not None else None)

    def auth(self) -> tuple[dict[str, str], dict[str, str]]:
        """(query parameters, headers) that sign a request in."""
        if self.token is not None:
            return {}, {"Authorization": f"Token {self.token}"}
        if self.username:
            return {"u": self.username, "p": self.password}, {}
        return {}, {}

    def write_request(self, rp: str | None, precision: Precision
                      ) -> tuple[str, dict[str, str], dict[str, str]]:
        params, headers = self.auth()
        params = {"db": self.database, "precision": precision, **params}
        if rp:
            params["rp"] = rp
        return self.url + "/write", params, headers

    def query_request(self, q: str, *, db: bool = True
                      ) -> tuple[str, dict[str, str], dict[str, str]]:
        params, headers = self.auth()
        base = {"db": self.database} if db else {}
        return self.url + "/query", {**base, "q": q, "epoch": "ms", **params}, headers


def error_text(body: str) -> str:
    """The ``error``/``message`` of InfluxDB's JSON answer (its own words), else the body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:500]
    if isinstance(doc, dict):
        for key in ("error", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])[:500]
    return body[:500]


def write_error(who: str, status: int, text: str) -> InfluxError:
    """The exception for a write answered ``status`` (not 204), ``text`` its reason."""
    if status in (400, 422):
        return InfluxRefused(f"{who} answered HTTP {status}: {text}")
    if status == 413:
        return InfluxTooLarge(f"{who} answered HTTP 413 (request too large): {text}")
    # 404 (no database yet), 401/403, 429, 5xx: not the data's fault, retried.
    return InfluxUnavailable(f"{who} answered HTTP {status}: {text}")


def query_result(status: int, text: str) -> list[Series]:
    """The series of a ``/query`` answer (the first statement's), or :class:`QueryError`."""
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise QueryError(f"InfluxDB answered HTTP {status}: {text[:200]}") from exc
    result = (body.get("results") or [{}])[0]
    if status != 200 or "error" in result or "error" in body:
        message = str(result.get("error") or body.get("error") or f"HTTP {status}")
        raise (QueryRefused if status < 500 else QueryError)(message)
    series: list[Series] = result.get("series") or []
    return series


class InfluxClient:
    """The v1 HTTP API over one aiohttp session (opened at first use; :meth:`close`)."""

    name = "influxdb-v1"

    def __init__(self, s: InfluxSettings | Endpoint, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        self.endpoint = Endpoint.of(s)
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _ses(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def write(self, lines: list[str], *, rp: str | None = None,
                    precision: Precision = "ms") -> None:
        """Store line protocol (``rp`` None: the database's default retention policy)."""
        if not lines:
            return
        url, params, headers = self.endpoint.write_request(rp, precision)
        try:
            async with self._ses().post(url, params=params, headers=headers,
                                        data="\n".join(lines).encode()) as resp:
                if resp.status == 204:
                    return
                text = error_text(await resp.text())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InfluxUnavailable(f"{self.name} at {url}: {exc!r}") from exc
        raise write_error(self.name, resp.status, text)

    async def query(self, q: str, *, post: bool = False, db: bool = True,
                    timeout_s: float | None = None) -> list[Series]:
        """Run one InfluxQL statement (``post`` for those that change something)."""
        url, params, headers = self.endpoint.query_request(q, db=db)
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        try:
            if post:
                req = self._ses().post(url, data=params, headers=headers, timeout=timeout)
            else:
                req = self._ses().get(url, params=params, headers=headers, timeout=timeout)
            async with req as r:
                text, status = await r.text(), r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QueryError(f"InfluxDB at {self.endpoint.url}: {type(exc).__name__}: {exc}"
                             ) from exc
        return query_result(status, text)

    async def ping(self) -> bool:
        try:
            async with self._ses().get(self.endpoint.url + "/ping",
                                       timeout=aiohttp.ClientTimeout(PING_TIMEOUT_S)) as r:
                return r.status == 204
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> InfluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def query(s: InfluxSettings | Endpoint, q: str, timeout_s: float = QUERY_TIMEOUT_S
                ) -> list[Series]:
    """Run one read statement; return its series (each with name, tags, columns, values)."""
    async with InfluxClient(s, timeout_s) as client:
        return await client.query(q)


def quote_str(value: str) -> str:
    """A string literal for InfluxQL (single quotes and backslashes escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ------------------------------------------------------------------ without an event loop
def _urlopen(url: str, data: bytes | None, headers: dict[str, str], timeout: float
             ) -> tuple[int, str]:
    if not url.startswith(("http://", "https://")):
        raise QueryError(f"InfluxDB URL {url!r}: not http(s)")
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 — checked
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 — our URL
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def query_sync(s: InfluxSettings | Endpoint, q: str, *, post: bool = False, db: bool = True,
               timeout_s: float = QUERY_TIMEOUT_S) -> list[Series]:
    """:meth:`InfluxClient.query` for code without an event loop."""
    ep = Endpoint.of(s)
    url, params, headers = ep.query_request(q, db=db)
    data = urllib.parse.urlencode(params).encode()
    try:
        status, text = (_urlopen(url, data, headers, timeout_s) if post
                        else _urlopen(f"{url}?{data.decode()}", None, headers, timeout_s))
    except OSError as exc:
        raise QueryError(f"InfluxDB at {ep.url}: {type(exc).__name__}: {exc}") from exc
    return query_result(status, text)


def ping_sync(url: str, timeout_s: float = PING_TIMEOUT_S) -> bool:
    """Whether InfluxDB at ``url`` answers ``/ping`` with 204 (its readiness)."""
    try:
        return _urlopen(url.rstrip("/") + "/ping", None, {}, timeout_s)[0] == 204
    except (OSError, QueryError):
        return False


# ------------------------------------------------------------------ v2 writes
class InfluxV2Client:
    """InfluxDB 2.x ``/api/v2/write`` through ``influxdb-client`` (token, org, bucket)."""

    name = "influxdb-v2"

    def __init__(self, s: InfluxSettings, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        if not s.bucket or not s.org:
            raise ValueError("LIFELINE_INFLUX_API=v2 needs LIFELINE_INFLUX_ORG and "
                             "LIFELINE_INFLUX_BUCKET (and usually LIFELINE_INFLUX_TOKEN)")
        self.url = s.url
        self.org = s.org
        self.token = s.token.get_secret_value() if s.token else ""
        self.timeout_ms = int(timeout_s * 1000)
        self._client: Any = None

    async def write(self, lines: list[str], *, bucket: str,
                    precision: Precision = "ms") -> None:
        if not lines:
            return
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        if self._client is None:
            self._client = InfluxDBClientAsync(url=self.url, token=self.token, org=self.org,
                                               timeout=self.timeout_ms)
        wp = {"ms": WritePrecision.MS, "ns": WritePrecision.NS, "s": WritePrecision.S,
              "u": WritePrecision.US}[precision]
        try:
            await self._client.write_api().write(bucket=bucket, org=self.org,
                                                 record="\n".join(lines), write_precision=wp)
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(
                exc.body)
            status = exc.status or 0
            err = write_error(self.name, status, error_text(body) if status in (400, 413, 422)
                              else body[:500])
            raise err from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise InfluxUnavailable(f"{self.name} at {self.url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
