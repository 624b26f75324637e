"""Time-series sinks behind one interface.

A sink either stores a whole batch, raises :class:`SinkUnavailable` (retry later: the
writer applies backpressure and skips nothing), or raises :class:`SinkRejected` for data
the database refuses for good (the writer dead-letters those with the database's reason).
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from services.core.settings import InfluxSettings


class SinkError(Exception):
    """Base of the writer's sink errors."""


class SinkUnavailable(SinkError):
    """The store is down, overloaded or refusing us for now; retry the same batch."""


class SinkRejected(SinkError):
    """The store refused the data itself (e.g. a field type conflict)."""


class Sink(Protocol):
    name: str

    async def write(self, lines: list[str]) -> None: ...

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

    async def write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = ("\n".join(lines)).encode()
        try:
            async with self._session.post(self.url, params=self.params, data=body) as resp:
                if resp.status == 204:
                    return
                text = (await resp.text())[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SinkUnavailable(f"{self.name} at {self.url}: {exc!r}") from exc
        if resp.status == 400:
            raise SinkRejected(f"{self.name} refused the batch: {text}")
        raise SinkUnavailable(f"{self.name} answered HTTP {resp.status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def make_sink(settings: InfluxSettings, timeout_s: float = 10.0) -> Sink:
    if settings.api == "v1":
        return InfluxV1Sink(settings, timeout_s)
    raise NotImplementedError(
        "LIFELINE_INFLUX_API=v2 (influxdb-client) is not built yet; see issue 5"
    )
