"""The facility registry: which facilities exist, their sensors, and their thresholds.

A YAML file validated by these models. Thresholds are data with provenance (``source``);
defaults are marked ``default: true`` so nobody mistakes a placeholder for a design value.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from schemas.common import Contract, Identifier
from schemas.kinds import METRICS, AlarmLevel, FacilityKind, Metric


class RegistryError(ValueError):
    """The registry file is missing, not YAML, or violates the schema."""


class Direction(StrEnum):
    UPPER = "upper"
    LOWER = "lower"


class Threshold(Contract):
    """One level of a threshold rule, in the metric's canonical unit.

    ``upper``: raised when value >= ``raise_at``, cleared when value < ``clear_at``.
    ``lower``: raised when value <= ``raise_at``, cleared when value > ``clear_at``.
    ``clear_at`` defaults to ``raise_at`` (no hysteresis).
    """

    level: AlarmLevel
    direction: Direction = Direction.UPPER
    raise_at: float = Field(allow_inf_nan=False)
    clear_at: float | None = Field(default=None, allow_inf_nan=False)
    source: Annotated[str, Field(min_length=3)] = Field(
        description="Where the number comes from (standard, design document, or 'placeholder')."
    )
    default: bool = Field(
        default=False, description="True for a shipped default still to be replaced."
    )

    @property
    def clear_value(self) -> float:
        return self.raise_at if self.clear_at is None else self.clear_at

    @model_validator(mode="after")
    def _hysteresis_direction(self) -> Threshold:
        c = self.clear_value
        if self.direction is Direction.UPPER and c > self.raise_at:
            raise ValueError(f"upper threshold: clear_at {c} must be <= raise_at {self.raise_at}")
        if self.direction is Direction.LOWER and c < self.raise_at:
            raise ValueError(f"lower threshold: clear_at {c} must be >= raise_at {self.raise_at}")
        return self


class Sensor(Contract):
    id: Identifier
    metric: Metric
    unit: str = Field(description="Must be the metric's canonical unit.")
    range: tuple[float, float] = Field(description="Instrument range [min, max], canonical unit.")
    interval_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        description="Expected report interval in seconds."
    )
    thresholds: list[Threshold] = Field(default_factory=list)
    description: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Sensor:
        canonical = METRICS[self.metric].unit
        if self.unit != canonical:
            raise ValueError(
                f"sensor {self.id}: unit {self.unit!r} is not the canonical unit "
                f"{canonical!r} of {self.metric}"
            )
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"sensor {self.id}: range min {lo} must be below max {hi}")
        for direction in Direction:
            levels = [t for t in self.thresholds if t.direction is direction]
            names = [t.level for t in levels]
            if len(set(names)) != len(names):
                raise ValueError(f"sensor {self.id}: duplicate {direction} threshold level")
            ordered = sorted(levels, key=lambda t: t.level.severity)
            values = [t.raise_at for t in ordered]
            expect = sorted(values, reverse=direction is Direction.LOWER)
            if values != expect:
                raise ValueError(
                    f"sensor {self.id}: {direction} thresholds must get stricter with level "
                    f"(got {dict(zip([t.level.value for t in ordered], values, strict=True))})"
                )
        return self


class Facility(Contract):
    id: Identifier
    kind: FacilityKind
    name: str
    name_zh: str | None = None
    district: str
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    sensors: Annotated[list[Sensor], Field(min_length=1)]

    @model_validator(mode="after")
    def _metrics_fit_kind(self) -> Facility:
        for s in self.sensors:
            if self.kind not in METRICS[s.metric].kinds:
                raise ValueError(f"facility {self.id}: a {self.kind} facility has no {s.metric}")
        return self


class Registry(Contract):
    version: int = 1
    name: str
    timezone: str = "Asia/Shanghai"
    facilities: Annotated[list[Facility], Field(min_length=1)]

    _by_id: dict[str, Facility] = PrivateAttr(default_factory=dict)
    _sensors: dict[tuple[str, str], Sensor] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> Registry:
        seen: set[str] = set()
        sensors: set[str] = set()
        for f in self.facilities:
            if f.id in seen:
                raise ValueError(f"duplicate facility id {f.id}")
            seen.add(f.id)
            for s in f.sensors:
                if s.id in sensors:
                    raise ValueError(f"duplicate sensor id {s.id} (facility {f.id})")
                sensors.add(s.id)
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._by_id = {f.id: f for f in self.facilities}
        self._sensors = {(f.id, s.id): s for f in self.facilities for s in f.sensors}

    def facility(self, facility_id: str) -> Facility | None:
        return self._by_id.get(facility_id)

    def sensor(self, facility_id: str, sensor_id: str) -> Sensor | None:
        return self._sensors.get((facility_id, sensor_id))

    @property
    def sensor_count(self) -> int:
        return len(self._sensors)


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry YAML file; errors name the file and the field."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"registry {p} is not valid YAML: {exc}") from exc
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(f"registry {p} is invalid:\n{exc}") from exc
