"""Time-series sinks behind one interface.

A sink either stores a whole batch, raises :class:`SinkUnavailable` (retry later: the
writer applies backpressure and skips nothing), or raises :class:`SinkRejected` for data
the database refuses for good — HTTP 400/422 (a bad line, a field type conflict, a point
outside the retention policy; InfluxDB 1.x stores the batch's other points and says
``partial write``) and 413 (:class:`SinkTooLarge`). The writer then isolates the refused
points by writing halves of the batch again and dead-letters only their events, with the
database's reason (services/writer/batch.py).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import aiohttp

from services.core.settings import InfluxSettings


class SinkError(Exception):
    """Base of the writer's sink errors."""


class SinkUnavailable(SinkError):
    """The store is down, overloaded or refusing us for now; retry the same batch."""


class SinkRejected(SinkError):
    """The store refused the data itself (e.g. a field type conflict)."""


class SinkTooLarge(SinkRejected):
    """The request was too large (413): smaller parts of it may be stored."""


def _refusal(name: str, status: int, text: str) -> SinkRejected | None:
    """The exception for a refusing answer, None when the answer is not a refusal."""
    if status in (400, 422):
        return SinkRejected(f"{name} answered HTTP {status}: {text}")
    if status == 413:
        return SinkTooLarge(f"{name} answered HTTP 413 (request too large): {text}")
    return None


def _error_text(body: str) -> str:
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


class Sink(Protocol):
    name: str

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: str = "ms") -> None:
        """Store the lines; ``long_term`` ones (alarms) outlive the raw retention;
        ``precision`` of their timestamps: "ms" (default) or "ns" (the audit trail)."""
        ...

    async def close(self) -> None: ...


class InfluxV1Sink:
    """InfluxDB 1.x ``/write`` with line protocol at millisecond precision."""

    name = "influxdb-v1"

    def __init__(self, settings: InfluxSettings, timeout_s: float = 10.0) -> None:
        self.url = settings.url.rstrip("/") + "/write"
        self.params = {"db": settings.database, "precision": "ms"}
        if settings.username:
            self.params["u"] = settings.username
            self.params["p"] = settings.password.get_secret_value() if settings.password else ""
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: str = "ms") -> None:
        if not lines:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = ("\n".join(lines)).encode()
        params = {**self.params, "rp": "long"} if long_term else self.params
        if precision != "ms":
            params = {**params, "precision": precision}
        try:
            async with self._session.post(self.url, params=params, data=body) as resp:
                if resp.status == 204:
                    return
                text = _error_text(await resp.text())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkUnavailable(f"{self.name} at {self.url}: {exc!r}") from exc
        refused = _refusal(self.name, resp.status, text)
        if refused is not None:
            raise refused
        # 404 (no database yet), 401/403, 429, 5xx: not the data's fault, retried.
        raise SinkUnavailable(f"{self.name} answered HTTP {resp.status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class InfluxV2Sink:
    """InfluxDB 2.x ``/api/v2/write`` through ``influxdb-client`` (token, org, bucket)."""

    name = "influxdb-v2"

    def __init__(self, settings: InfluxSettings, timeout_s: float = 10.0) -> None:
        if not settings.bucket or not settings.org:
            raise ValueError("LIFELINE_INFLUX_API=v2 needs LIFELINE_INFLUX_ORG and "
                             "LIFELINE_INFLUX_BUCKET (and usually LIFELINE_INFLUX_TOKEN)")
        self.url = settings.url
        self.org = settings.org
        self.bucket = settings.bucket
        self.long_bucket = settings.long_bucket_name
        self.token = settings.token.get_secret_value() if settings.token else ""
        self.timeout_ms = int(timeout_s * 1000)
        self._client: Any = None

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: str = "ms") -> None:
        # Two buckets on 2.x, as the two retention policies on 1.x: raw readings in
        # ``bucket`` (its retention is the bucket's), the rest in ``long_bucket``; both are
        # mapped for InfluxQL by deploy/influxdb/10-dbrp.sh, which also creates the
        # 1-minute downsampling task.
        if not lines:
            return
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        if self._client is None:
            self._client = InfluxDBClientAsync(url=self.url, token=self.token, org=self.org,
                                               timeout=self.timeout_ms)
        try:
            await self._client.write_api().write(bucket=self.long_bucket if long_term
                                                 else self.bucket, org=self.org,
                                                 record="\n".join(lines),
                                                 write_precision=WritePrecision.NS if precision == "ns"
                                                 else WritePrecision.MS)
        except ApiException as exc:
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(
                exc.body)
            refused = _refusal(self.name, exc.status or 0, _error_text(body))
            if refused is not None:
                raise refused from exc
            raise SinkUnavailable(f"{self.name} answered HTTP {exc.status}: {body[:500]}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"{self.name} at {self.url}: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def make_sink(settings: InfluxSettings, timeout_s: float = 10.0) -> Sink:
    """The sink chosen by ``LIFELINE_INFLUX_API``: v1 (local default) or v2 (production)."""
    if settings.api == "v1":
        return InfluxV1Sink(settings, timeout_s)
    return InfluxV2Sink(settings, timeout_s)
