"""ingest's validation: every kind of bad input gets its reason; good readings survive."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from schemas.registry import Registry
from services.ingest.validate import Validator

NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
TOPIC = "lifeline/drainage/DR-BH-001/telemetry"


def reading(**over: object) -> dict[str, object]:
    r: dict[str, object] = {"sensor": "DR-BH-001-L1", "metric": "water_level", "value": 1.2,
                            "unit": "m"}
    r.update(over)
    return r


def payload(*readings: dict[str, object], ts: object = "2026-07-01T08:00:00Z",
            seq: object = 7) -> bytes:
    return json.dumps({"ts": ts, "seq": seq, "readings": list(readings)}).encode()


@pytest.fixture
def v(registry: Registry) -> Validator:
    return Validator(registry, max_payload_bytes=4096, max_future_s=300, max_past_s=86400)


def test_valid_report_is_converted(v: Validator) -> None:
    out = v.validate(TOPIC, payload(reading(value=120.0, unit="cm"),
                                    reading(sensor="DR-BH-001-R1", metric="rainfall", value=2,
                                            unit="mm")), NOW)
    assert out.dead_letter is None and out.batch is not None
    assert [r.value for r in out.batch.readings] == [1.2, 2.0]
    assert out.batch.readings[0].unit == "m" and out.batch.seq == 7
    assert out.batch.readings[0].ts == NOW


CASES = [
    ("not_json", TOPIC, b"{this is not json"),
    ("not_utf8", TOPIC, b"\xff\xfe{}"),
    ("schema", TOPIC, payload(reading(value="1.2"))),              # wrong type
    ("schema", TOPIC, b'{"ts": 0, "seq": 1, "readings": [{"sensor": "DR-BH-001-L1", '
                      b'"metric": "water_level", "value": NaN, "unit": "m"}]}'),
    ("schema", TOPIC, b'{"ts": 0, "seq": 1, "readings": [{"sensor": "DR-BH-001-L1", '
                      b'"metric": "water_level", "value": Infinity, "unit": "m"}]}'),
    ("schema", TOPIC, b'{"seq": 1, "readings": []}'),               # missing fields
    ("schema", TOPIC, payload(reading(), seq="x")),
    ("unknown_facility", "lifeline/drainage/DR-XX-999/telemetry", payload(reading())),
    ("unknown_sensor", TOPIC, payload(reading(sensor="DR-BH-001-ZZ"))),
    ("metric_mismatch", TOPIC, payload(reading(metric="flow"))),
    ("bad_unit", TOPIC, payload(reading(unit="kg"))),
    ("bad_unit", TOPIC, payload(reading(unit="ft/s"))),
    ("oversize", TOPIC, payload(*[reading()] * 60)),
    ("timestamp_future", TOPIC, payload(reading(), ts="2027-01-01T00:00:00Z")),
    ("timestamp_past", TOPIC, payload(reading(), ts="2020-01-01T00:00:00Z")),
    ("kind_mismatch", "lifeline/bridge/DR-BH-001/telemetry", payload(reading())),
    ("bad_topic", "lifeline/volcano/DR-BH-001/telemetry", payload(reading())),
    ("bad_topic", "lifeline/drainage/DR-BH-001/status", payload(reading())),
]


@pytest.mark.parametrize(("reason", "topic", "raw"), CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_bad_input_is_dead_lettered_with_reason(v: Validator, reason: str, topic: str,
                                                raw: bytes) -> None:
    out = v.validate(topic, raw, NOW)
    assert out.batch is None
    dl = out.dead_letter
    assert dl is not None and dl.reason == reason, dl
    assert dl.detail and dl.service == "ingest" and dl.source == f"mqtt:{topic}"
    assert dl.payload_size == len(raw)
    kept = base64.b64decode(dl.payload_b64)
    assert raw.startswith(kept) and (dl.payload_truncated or kept == raw)


def test_one_bad_reading_does_not_sink_the_report(v: Validator) -> None:
    out = v.validate(TOPIC, payload(reading(), reading(sensor="NOPE"),
                                    reading(sensor="DR-BH-001-Q1", metric="flow", value=3,
                                            unit="L/s")), NOW)
    assert out.batch is not None and [r.sensor for r in out.batch.readings] == [
        "DR-BH-001-L1", "DR-BH-001-Q1"]
    assert out.dead_letter is not None
    assert [(p.reason.value, p.reading_index) for p in out.dead_letter.problems] == [
        ("unknown_sensor", 1)]


def test_reading_time_overrides_report_time(v: Validator) -> None:
    own = (NOW - timedelta(seconds=30)).isoformat()
    out = v.validate(TOPIC, payload(reading(ts=own)), NOW)
    assert out.batch is not None and out.batch.readings[0].ts == NOW - timedelta(seconds=30)


def test_error_detail_names_field_and_value(v: Validator) -> None:
    out = v.validate(TOPIC, payload(reading(value="1.2")), NOW)
    assert out.dead_letter is not None
    assert "readings.0.value" in out.dead_letter.detail and "'1.2'" in out.dead_letter.detail


GAS_TOPIC = "lifeline/sewage/SG-BH-001/telemetry"


def gas(sensor: str, metric: str, value: float, unit: str) -> dict[str, object]:
    return {"sensor": f"SG-BH-001-{sensor}", "metric": metric, "value": value, "unit": unit}


def test_gas_detector_ppm_is_stored_in_canonical_units(v: Validator) -> None:
    out = v.validate(GAS_TOPIC, payload(gas("H1", "h2s", 10, "ppm"),
                                        gas("G1", "co", 20, "ppm"),
                                        gas("M1", "ch4", 2, "%vol"),
                                        gas("O1", "o2", 20.9, "%vol")), NOW)
    assert out.dead_letter is None and out.batch is not None
    got = {r.metric.value: (r.value, r.unit) for r in out.batch.readings}
    assert got["h2s"][0] == pytest.approx(13.94, rel=1e-3) and got["h2s"][1] == "mg/m³"
    assert got["co"][0] == pytest.approx(22.91, rel=1e-3) and got["co"][1] == "mg/m³"
    assert got["ch4"][0] == pytest.approx(40.0) and got["ch4"][1] == "%LEL"
    assert got["o2"] == (20.9, "%vol")


def test_ch4_in_ppm_becomes_lel(v: Validator) -> None:
    out = v.validate(GAS_TOPIC, payload(gas("M1", "ch4", 5000, "ppm")), NOW)
    assert out.batch is not None and out.batch.readings[0].value == pytest.approx(10.0)


def test_bogus_gas_unit_is_refused_beside_an_accepted_ppm_reading(v: Validator) -> None:
    out = v.validate(GAS_TOPIC, payload(gas("H1", "h2s", 10, "ppm"),
                                        gas("G1", "co", 20, "furlongs")), NOW)
    assert out.batch is not None and [r.sensor for r in out.batch.readings] == ["SG-BH-001-H1"]
    assert out.batch.readings[0].value == pytest.approx(13.94, rel=1e-3)
    assert out.batch.readings[0].unit == "mg/m³"
    assert out.dead_letter is not None
    assert [(p.reason.value, p.reading_index) for p in out.dead_letter.problems] == [
        ("bad_unit", 1)]
    assert "co" in out.dead_letter.problems[0].detail


@pytest.mark.parametrize(("sensor", "metric", "unit"), [
    ("M1", "ch4", "%"),          # ambiguous between %vol and %LEL
    ("O1", "o2", "%LEL"),
    ("H1", "h2s", "%LEL"),
])
def test_gas_units_that_must_not_convert(v: Validator, sensor: str, metric: str,
                                         unit: str) -> None:
    out = v.validate(GAS_TOPIC, payload(gas(sensor, metric, 1, unit)), NOW)
    assert out.batch is None and out.dead_letter is not None
    assert out.dead_letter.reason == "bad_unit"


def test_ppm_for_a_water_quality_metric_is_refused(v: Validator) -> None:
    topic = "lifeline/sewage/SQ-BH-001/telemetry"
    out = v.validate(topic, payload({"sensor": "SQ-BH-001-C1", "metric": "cod", "value": 80,
                                     "unit": "ppm"}), NOW)
    assert out.batch is None and out.dead_letter is not None
    assert out.dead_letter.reason == "bad_unit"


HUGE = "9" * 4301  # one digit beyond Python's int-str conversion limit


@pytest.mark.parametrize(("field", "raw"), [
    ("readings.0.value", ('{"ts": "2026-07-01T08:00:00Z", "seq": 7, "readings": [{"sensor": '
                          '"DR-BH-001-L1", "metric": "water_level", "value": ' + HUGE
                          + ', "unit": "m"}]}')),
    ("seq", ('{"ts": "2026-07-01T08:00:00Z", "seq": ' + HUGE + ', "readings": [{"sensor": '
             '"DR-BH-001-L1", "metric": "water_level", "value": 1, "unit": "m"}]}')),
    ("ts", ('{"ts": -' + HUGE + ', "seq": 7, "readings": [{"sensor": "DR-BH-001-L1", '
            '"metric": "water_level", "value": 1, "unit": "m"}]}')),
    ("ts", payload(reading(), ts="0001-01-01T00:00:00+00:01").decode()),
    ("ts", payload(reading(), ts="9999-12-31T23:59:59-23:59").decode()),
    ("readings.0.ts", payload(reading(ts="9999-12-31T23:59:59-23:59")).decode()),
])
def test_hostile_numbers_and_times_are_refused_not_raised(registry: Registry, field: str,
                                                          raw: str) -> None:
    v = Validator(registry, max_payload_bytes=65536, max_future_s=300, max_past_s=86400)
    out = v.validate(TOPIC, raw.encode(), NOW)
    assert out.batch is None and out.dead_letter is not None
    assert out.dead_letter.reason == "schema"
    assert out.dead_letter.detail.startswith(f"{field}: ")


def test_a_time_at_the_calendars_edge_that_parses_is_just_too_old(v: Validator) -> None:
    out = v.validate(TOPIC, payload(reading(), ts="0001-01-01T00:00:00Z"), NOW)
    assert out.dead_letter is not None and out.dead_letter.reason == "timestamp_past"
    out = v.validate(TOPIC, payload(reading(), ts="9999-12-31T23:59:59+23:59"), NOW)
    assert out.dead_letter is not None and out.dead_letter.reason == "timestamp_future"
