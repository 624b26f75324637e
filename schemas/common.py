"""Field types shared by the contracts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
)

# Ids appear in MQTT topics, Kafka keys and InfluxDB tags: keep them to a safe alphabet.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]

# Epoch milliseconds later than this are not milliseconds (year 2286): a seconds/µs mix-up.
# The one bound: parse_timestamp (pydantic's path) and epoch_ms (schemas/codec.py's fast
# decoder) both check it through _check_epoch_ms.
MAX_EPOCH_MS = 10_000_000_000_000


def _check_epoch_ms(value: int) -> int:
    if not 0 <= value < MAX_EPOCH_MS:
        shown = (str(value) if -10**30 < value < 10**30
                 else f"an integer of {len(str(abs(value)))} digits")
        raise ValueError(f"epoch milliseconds out of range: {shown}")
    return value


def parse_timestamp(value: Any) -> datetime:
    """The contract's timestamp: RFC 3339 with an offset, or integer epoch milliseconds
    in ``[0, MAX_EPOCH_MS)``; an aware UTC datetime, else ValueError."""
    if isinstance(value, bool):
        raise ValueError("timestamp must be an RFC 3339 string or epoch milliseconds")
    if isinstance(value, int):
        return datetime.fromtimestamp(_check_epoch_ms(value) / 1000, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"not an RFC 3339 timestamp: {value[:40]!r}") from exc
        if parsed.tzinfo is None:
            raise ValueError("timestamp needs a UTC offset (e.g. 'Z' or '+08:00')")
        return _to_utc(parsed, value[:40])
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp needs a UTC offset")
        return _to_utc(value, value.isoformat())
    raise ValueError("timestamp must be an RFC 3339 string or epoch milliseconds")


def _to_utc(value: datetime, shown: str) -> datetime:
    """``value`` in UTC; a ValueError (never OverflowError) when its offset carries it
    outside years 1–9999 (``0001-01-01T00:00:00+00:01``, ``9999-12-31T23:59:59-23:59``)."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"timestamp {shown!r} is outside years 1-9999 once converted to "
                         "UTC") from exc


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
]
"""An aware UTC datetime; accepts RFC 3339 with offset or integer epoch milliseconds."""


def to_epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch, the precision Lifeline stores."""
    return round(value.timestamp() * 1000)


def epoch_ms(value: Any) -> int:
    """A timestamp as the contract reads it, straight to epoch milliseconds:
    ``to_epoch_ms(parse_timestamp(value))`` without building a datetime for an integer
    (the writer's hot path). ValueError for anything the contract refuses."""
    if type(value) is int:
        return _check_epoch_ms(value)
    return to_epoch_ms(parse_timestamp(value))


class Contract(BaseModel):
    """Base of every contract: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc
    return name


TimeZoneName = Annotated[str, AfterValidator(_zone)]
"""An IANA time zone name, e.g. ``Asia/Shanghai``."""

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(path: str | Path, model: type[M], error: type[ValueError], what: str) -> M:
    """Read a YAML file into ``model``; every failure is ``error`` naming the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc}") from exc
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 — a safe loader
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{p}: {exc}") from exc
