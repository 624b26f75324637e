"""The diurnal baseline of sewage flow and level (services/writer/baseline.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.writer.baseline import DiurnalBaseline
from services.writer.points import PointBuilder
from tests.support.engine_helpers import make_registry, sensor

START = datetime(2026, 7, 1, tzinfo=UTC) - timedelta(hours=8)  # local midnight (UTC+8)


def usual(local_hour: float) -> float:
    """A town's sewage: low at 04:00, peaks around 08:00 and 20:00 (L/s)."""
    return 100 + 60 * math.sin((local_hour - 4) / 24 * 2 * math.pi) ** 2


def registry() -> Registry:
    return make_registry(sensor("Q1", "flow", rng=(0, 1000), interval=300), kind="sewage")


def test_learns_the_shape_of_the_day_and_warms_up_first() -> None:
    b = DiurnalBaseline(registry(), warmup_h=1.0)
    out = []
    for i in range(8 * 24 * 12):  # eight days, every 5 minutes
        t = START + timedelta(minutes=5 * i)
        local_h = (i * 5 / 60) % 24
        out.append((local_h, b.update("F-1", "Q1", int(t.timestamp() * 1000), usual(local_h))))
    # The first hour-slot visit gives nothing (warm-up), later ones do.
    assert all(v is None for _, v in out[:12])
    last_day = out[-24 * 12:]
    for local_h, v in last_day:
        assert v is not None
        assert abs(v - usual(local_h)) < 0.08 * usual(local_h), (local_h, v)
    # The 08:00 baseline is far from the 04:00 one: it is a day profile, not one mean.
    at = {round(h, 2): v for h, v in last_day}
    assert at[8.0] - at[4.0] > 30  # type: ignore[operator]


def test_a_spike_is_compared_with_what_was_usual() -> None:
    b = DiurnalBaseline(registry(), warmup_h=0)
    ms = int(START.timestamp() * 1000)
    b.update("F-1", "Q1", ms, 100.0)
    assert b.update("F-1", "Q1", ms + 300_000, 900.0) == 100.0


def test_restart_restores_the_profile_from_hourly_means() -> None:
    b = DiurnalBaseline(registry(), warmup_h=1.0)
    rows = []
    for d in range(7):
        for h in range(24):
            t = START + timedelta(days=d, hours=h)
            rows.append(("F-1", "Q1", int(t.timestamp() * 1000), usual(h)))
    rows.append(("F-1", "not-watched", 0, 5.0))
    assert b.bootstrap(rows) == 1
    t = START + timedelta(days=9, hours=8)
    assert b.update("F-1", "Q1", int(t.timestamp() * 1000), 500.0) == usual(8)


def test_points_carry_the_baseline_for_sewage_flow() -> None:
    reg = registry()
    b = DiurnalBaseline(reg, warmup_h=0)
    pb = PointBuilder(reg, b)

    def batch(seq: int, value: float) -> ReadingBatch:
        ts = START + timedelta(minutes=5 * seq)
        return ReadingBatch(facility_id="F-1", kind="sewage", seq=seq, received_at=ts,
                            readings=[Reading(sensor="Q1", metric="flow", value=value,
                                              unit="L/s", ts=ts)])

    [first] = pb.readings(batch(1, 120.0))
    assert "baseline=" not in first  # nothing learned yet
    [second] = pb.readings_raw(batch(2, 130.0).model_dump_json().encode())
    assert " baseline=120,seq=2i,value=130 " in second
