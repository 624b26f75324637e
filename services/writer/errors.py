"""The writer's exceptions. Every one derives from ``services.core.errors.LifelineError``:
the sink errors are the one InfluxDB client's own types (services/core/influx.py) under the
writer's names, and :class:`StorageSetupError` is a query error of that client."""

from __future__ import annotations

from services.core.influx import (
    InfluxError,
    InfluxRefused,
    InfluxTooLarge,
    InfluxUnavailable,
    QueryError,
)

__all__ = ["UNREADABLE", "SinkError", "SinkRejected", "SinkTooLarge", "SinkUnavailable",
           "StorageSetupError"]

SinkError = InfluxError
SinkUnavailable = InfluxUnavailable  # retry later: backpressure, nothing skipped
SinkRejected = InfluxRefused  # HTTP 400/422: the data is refused for good (isolated, dead-lettered)
SinkTooLarge = InfluxTooLarge  # HTTP 413, a refusal too


class StorageSetupError(QueryError):
    """The database refused a statement of the storage layout or could not be reached
    (services/writer/storage.py; the writer retries with backoff)."""


# What reading one record of an input topic may raise (pydantic's ValidationError is a
# ValueError): the record is dead-lettered with its reason, never fatal to a consumer (an
# exception escaping a consumer loop would restart it on the same record, forever).
UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)
