"""ingest's fast path and its strict pydantic path give the same outcome for any message.

The generator stays close to the contract on purpose — valid reports with one thing bent
(a type, a key, a unit, a time, a sensor) — because that is where the two paths could
disagree; tests/support/fuzz_ingest.py throws arbitrary bytes at the validator as well.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.reading import ReadingBatch
from schemas.registry import Registry
from services.ingest.validate import Outcome, Validator

NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
FID = "DR-BH-001"
TOPIC = f"lifeline/drainage/{FID}/telemetry"


def _validators(registry: Registry) -> tuple[Validator, Validator]:
    kw: dict[str, Any] = {"max_payload_bytes": 65536, "max_future_s": 300,
                          "max_past_s": 86400}
    return Validator(registry, fast=True, **kw), Validator(registry, fast=False, **kw)


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                   st.integers(min_value=10**300, max_value=10**320), st.booleans(),
                   st.none(), st.text(max_size=5), st.just(1e308))
units = st.sampled_from(["m", "cm", "mm", "km", "ft", "kg", "", "m" * 17, "degC", "K",
                         "m/s", "L/s", "mm/h"])
gas_units = st.sampled_from(["ppm", "ppmv", "PPM", "ppb", "%vol", "vol%", "%VOL", "%",
                             "%LEL", "mg/m³", "mg/m3", "µg/m³", "ppx", "mg/L", "m"])
times = st.one_of(
    st.just("2026-07-01T08:00:00Z"), st.just("2026-07-01T16:00:00+08:00"),
    st.just("2026-07-01T08:00:00"), st.just("2026-07-01T08:10:00Z"),   # naive, future
    st.just("2026-06-25T08:00:00Z"),                                    # too old
    st.integers(min_value=-5, max_value=2 * 10**13), st.just(True), st.just(1.5e12),
    st.text(max_size=8))


@st.composite
def reading(draw: st.DrawFn, sensors: list[tuple[str, str, str]],
            unit_choices: st.SearchStrategy[str] = units) -> Any:
    sid, metric, unit = draw(st.sampled_from(sensors))
    r: dict[str, Any] = {"sensor": sid, "metric": metric,
                         "value": draw(st.floats(-1e6, 1e6, allow_nan=False)), "unit": unit}
    bend = draw(st.integers(0, 9))
    if bend == 1:
        r["value"] = draw(values)
    elif bend == 2:
        r["unit"] = draw(unit_choices)
    elif bend == 3:
        r["sensor"] = draw(st.sampled_from(["DR-XX-1", "", 7, "bad id!", sid]))
    elif bend == 4:
        r["metric"] = draw(st.sampled_from(["flow", "water_level", "rainfall", 3, "nope"]))
    elif bend == 5:
        r["ts"] = draw(times)
    elif bend == 6:
        r.pop(draw(st.sampled_from(sorted(r))))
    elif bend == 7:
        r["extra"] = 1
    elif bend == 8:
        return draw(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)))
    return r


@st.composite
def message(draw: st.DrawFn, sensors: list[tuple[str, str, str]],
            unit_choices: st.SearchStrategy[str] = units) -> Any:
    msg: dict[str, Any] = {"ts": "2026-07-01T08:00:00Z", "seq": draw(st.integers(0, 10**6)),
                           "readings": draw(st.lists(reading(sensors, unit_choices),
                                                     min_size=1,
                                                     max_size=6))}
    bend = draw(st.integers(0, 6))
    if bend == 1:
        msg["ts"] = draw(times)
    elif bend == 2:
        msg["seq"] = draw(st.one_of(st.integers(), st.just(2**63), st.booleans(),
                                    st.text(max_size=3), st.floats()))
    elif bend == 3:
        msg.pop(draw(st.sampled_from(sorted(msg))))
    elif bend == 4:
        msg["extra"] = draw(st.integers())
    elif bend == 5:
        msg["readings"] = draw(st.sampled_from([[], None, {}, "x"]))
    return msg


def _same(fast: Outcome, slow: Outcome) -> None:
    assert fast.facility_id == slow.facility_id
    assert fast.dead_letter == slow.dead_letter
    assert (fast.batch_json is None) == (slow.batch_json is None)
    assert fast.readings == slow.readings
    if fast.batch_json is not None and slow.batch_json is not None:
        f = ReadingBatch.model_validate_json(fast.batch_json)
        s = ReadingBatch.model_validate_json(slow.batch_json)
        assert f == s
        assert f == slow.batch


def _sensors(registry: Registry, fid: str = FID) -> list[tuple[str, str, str]]:
    fac = registry.facility(fid)
    assert fac is not None
    from schemas.kinds import METRICS
    return [(s.id, str(s.metric), METRICS[s.metric].unit) for s in fac.sensors]


def test_the_two_paths_agree(registry: Registry) -> None:
    fast_v, slow_v = _validators(registry)

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message(_sensors(registry)))
    def check(msg: Any) -> None:
        try:
            raw = json.dumps(msg).encode()
        except ValueError:
            return
        _same(fast_v.validate(TOPIC, raw, NOW), slow_v.validate(TOPIC, raw, NOW))

    check()


def test_the_everyday_report_takes_the_fast_path(registry: Registry,
                                                 monkeypatch: Any) -> None:
    """A plain report never reaches pydantic validation (else the path is dead code)."""
    fast_v, _ = _validators(registry)
    sid, metric, unit = _sensors(registry)[0]
    raw = json.dumps({"ts": "2026-07-01T08:00:00Z", "seq": 1, "readings": [
        {"sensor": sid, "metric": metric, "value": 2, "unit": unit}]}).encode()

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("took the strict path")

    monkeypatch.setattr(Validator, "_reading", refuse)
    out = fast_v.validate(TOPIC, raw, NOW)
    assert out.readings == 1 and out.batch is not None
    assert out.batch.readings[0].value == 2.0 and out.batch.readings[0].ts == NOW


def test_converted_units_and_edges_match(registry: Registry) -> None:
    fast_v, slow_v = _validators(registry)
    sid, metric, _unit = _sensors(registry)[0]
    for value, unit, ts in [(120, "cm", 1782892800000), (1e308, "km", "2026-07-01T08:00:00Z"),
                            (-0.0, "mm", "2026-07-01T16:04:59+08:00"),
                            (10**400, "m", "2026-07-01T08:00:00Z"),
                            (2.5, "m", (NOW - timedelta(hours=23)).isoformat())]:
        raw = json.dumps({"ts": ts, "seq": 3, "readings": [
            {"sensor": sid, "metric": metric, "value": value, "unit": unit}]}).encode()
        fast, slow = fast_v.validate(TOPIC, raw, NOW), slow_v.validate(TOPIC, raw, NOW)
        _same(fast, slow)
        if fast.batch is not None:
            assert all(math.isfinite(r.value) for r in fast.batch.readings)


GAS_FID = "SG-BH-001"
GAS_TOPIC = f"lifeline/sewage/{GAS_FID}/telemetry"


def test_the_two_paths_agree_on_gas_units(registry: Registry) -> None:
    """Gas detectors' ppm/ppb/%vol go through the metric-aware conversion on both paths."""
    fast_v, slow_v = _validators(registry)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(message(_sensors(registry, GAS_FID), gas_units))
    def check(msg: Any) -> None:
        try:
            raw = json.dumps(msg).encode()
        except ValueError:
            return
        _same(fast_v.validate(GAS_TOPIC, raw, NOW), slow_v.validate(GAS_TOPIC, raw, NOW))

    check()


def test_gas_ppm_takes_the_fast_path_and_matches(registry: Registry,
                                                 monkeypatch: Any) -> None:
    fast_v, slow_v = _validators(registry)
    raw = json.dumps({"ts": "2026-07-01T08:00:00Z", "seq": 1, "readings": [
        {"sensor": f"{GAS_FID}-H1", "metric": "h2s", "value": 10, "unit": "ppm"},
        {"sensor": f"{GAS_FID}-M1", "metric": "ch4", "value": 5000, "unit": "ppm"},
        {"sensor": f"{GAS_FID}-O1", "metric": "o2", "value": 20.9, "unit": "%vol"}]}).encode()
    slow = slow_v.validate(GAS_TOPIC, raw, NOW)

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("took the strict path")

    monkeypatch.setattr(Validator, "_reading", refuse)
    fast = fast_v.validate(GAS_TOPIC, raw, NOW)
    _same(fast, slow)
    assert fast.batch is not None
    assert [(round(r.value, 2), r.unit) for r in fast.batch.readings] == [
        (13.94, "mg/m³"), (10.0, "%LEL"), (20.9, "%vol")]


def test_the_two_paths_agree_on_hostile_numbers_and_times(registry: Registry) -> None:
    """Integers beyond the int-str conversion limit (spliced in: json.dumps cannot write
    them) and times whose offset leaves years 1–9999: both paths refuse them alike."""
    fast_v, slow_v = _validators(registry)
    sid, metric, unit = _sensors(registry)[0]

    def doc(ts: str, seq: str, value: str, own_ts: str | None = None) -> bytes:
        r = (f'{{"sensor": "{sid}", "metric": "{metric}", "value": {value}, "unit": "{unit}"'
             + (f', "ts": {own_ts}' if own_ts else "") + "}")
        return f'{{"ts": {ts}, "seq": {seq}, "readings": [{r}]}}'.encode()

    huge = "8" * 5000
    good_ts = '"2026-07-01T08:00:00Z"'
    for raw in [doc(good_ts, huge, "1"), doc(good_ts, "1", huge), doc(good_ts, "1", "-" + huge),
                doc(huge, "1", "1"), doc(good_ts, "1", "1", own_ts=huge),
                doc('"0001-01-01T00:00:00+00:01"', "1", "1"),
                doc('"9999-12-31T23:59:59-23:59"', "1", "1"),
                doc(good_ts, "1", "1", own_ts='"0001-01-01T00:00:59+23:59"'),
                doc('"0001-01-01T00:00:00Z"', "1", "1"),
                doc('"9999-12-31T23:59:59+23:59"', "1", "1")]:
        fast, slow = fast_v.validate(TOPIC, raw, NOW), slow_v.validate(TOPIC, raw, NOW)
        _same(fast, slow)
        assert fast.dead_letter is not None and fast.batch_json is None
