"""Time-series sinks behind one interface, over the one InfluxDB client (services/core/influx.py).

A sink either stores a whole batch, raises :class:`SinkUnavailable` (retry later: the
writer applies backpressure and skips nothing), or raises :class:`SinkRejected` for data
the database refuses for good — HTTP 400/422 (a bad line, a field type conflict, a point
outside the retention policy; InfluxDB 1.x stores the batch's other points and says
``partial write``) and 413 (:class:`SinkTooLarge`). The writer then isolates the refused
points by writing halves of the batch again and dead-letters only their events, with the
database's reason (services/writer/batch.py). The three are the client's own error types
(services/writer/errors.py).
"""

from __future__ import annotations

from typing import Protocol

from schemas.storage import LONG
from services.core.influx import InfluxClient, InfluxV2Client, Precision
from services.core.settings import InfluxSettings
from services.writer.errors import SinkError, SinkRejected, SinkTooLarge, SinkUnavailable

__all__ = ["InfluxV1Sink", "InfluxV2Sink", "Sink", "SinkError", "SinkRejected", "SinkTooLarge",
           "SinkUnavailable", "make_sink"]


class Sink(Protocol):
    name: str

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: Precision = "ms") -> None:
        """Store the lines; ``long_term`` ones (alarms) outlive the raw retention;
        ``precision`` of their timestamps: "ms" (default) or "ns" (the audit trail)."""
        ...

    async def close(self) -> None: ...


class InfluxV1Sink:
    """InfluxDB 1.x ``/write``: the default retention policy, ``long`` for long-term lines."""

    name = InfluxClient.name

    def __init__(self, settings: InfluxSettings, timeout_s: float = 10.0) -> None:
        self.client = InfluxClient(settings, timeout_s)

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: Precision = "ms") -> None:
        await self.client.write(lines, rp=LONG if long_term else None, precision=precision)

    async def close(self) -> None:
        await self.client.close()


class InfluxV2Sink:
    """InfluxDB 2.x: two buckets, as the two retention policies on 1.x — raw readings in
    ``bucket`` (its retention is the bucket's), the rest in ``long_bucket``; both are mapped
    for InfluxQL by deploy/influxdb/setup.sh, which also creates the 1-minute downsampling
    task."""

    name = InfluxV2Client.name

    def __init__(self, settings: InfluxSettings, timeout_s: float = 10.0) -> None:
        self.client = InfluxV2Client(settings, timeout_s)
        self.bucket = str(settings.bucket)
        self.long_bucket = settings.long_bucket_name

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: Precision = "ms") -> None:
        await self.client.write(lines, bucket=self.long_bucket if long_term else self.bucket,
                                precision=precision)

    async def close(self) -> None:
        await self.client.close()


def make_sink(settings: InfluxSettings, timeout_s: float = 10.0) -> Sink:
    """The sink chosen by ``LIFELINE_INFLUX_API``: v1 (local default) or v2 (production)."""
    if settings.api == "v1":
        return InfluxV1Sink(settings, timeout_s)
    return InfluxV2Sink(settings, timeout_s)
