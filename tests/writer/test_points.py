"""The InfluxDB line protocol the writer produces."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.kinds import AlarmLevel
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.writer.points import PointBuilder

TS = datetime(2026, 7, 1, 8, 0, 0, 123000, tzinfo=UTC)


def test_reading_point_uses_event_time_and_tags(registry: Registry) -> None:
    b = ReadingBatch(facility_id="DR-BH-001", kind="drainage", seq=42, received_at=TS,
                     readings=[Reading(sensor="DR-BH-001-L1", metric="water_level", value=1.5,
                                       unit="m", ts=TS)])
    [line] = PointBuilder(registry).readings(b)
    assert line == ("reading,district=Binhai\\ Park,facility=DR-BH-001,kind=drainage,"
                    "metric=water_level,sensor=DR-BH-001-L1 fill=1.5,seq=42i,value=1.5 "
                    "1782892800123")  # a 1.0 m pipe: fill ratio h/D beside the level
    assert PointBuilder(registry).readings_with_point(b) == [line]


def test_alarm_point_escapes_text(registry: Registry) -> None:
    ev = AlarmEvent(event_id="e", alarm_id="a", event=AlarmEventType.RAISED, level="red",
                    previous_level=None, facility_id="DR-BH-001", kind="drainage",
                    sensor="DR-BH-001-L1", metric="water_level", rule="threshold-upper",
                    value=3.0, threshold=2.95, unit="m", ts=TS, message='say "hi", ok')
    line = PointBuilder(registry).alarm(ev)
    assert line.startswith("alarm_event,category=facility,district=Binhai\\ Park,event=raised,"
                           "facility=DR-BH-001,")
    assert 'message="say \\"hi\\", ok"' in line and "severity=4i" in line
    assert line.endswith(" 1782892800123")


def test_fast_reading_lines_equal_influxdb_client_points(registry: Registry) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    builder = PointBuilder(registry)

    @settings(max_examples=300, deadline=None)
    @given(st.floats(allow_nan=False, allow_infinity=False), st.integers(0, 2**62),
           st.integers(0, 4_000_000_000_000), st.sampled_from(
               [*[f.id for f in registry.facilities][:8], "UNKNOWN-1"]))
    def check(value: float, seq: int, ts_ms: int, fid: str) -> None:
        ts = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
        b = ReadingBatch(facility_id=fid, kind="drainage", seq=seq, received_at=ts,
                         readings=[Reading(sensor="S.1-x", metric="water_level", value=value,
                                           unit="m", ts=ts)])
        assert builder.readings(b) == builder.readings_with_point(b)

    check()


def test_raw_fast_path_equals_the_validated_path(registry: Registry) -> None:
    """The writer's hot path (json + checks) gives exactly the lines of the strict path."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st

    builder = PointBuilder(registry)
    ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}\Z")
    stamp = st.one_of(
        st.integers(0, 9_999_999_999_999),
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.just(UTC)).map(lambda d: d.isoformat()))
    reading = st.fixed_dictionaries({
        "sensor": ids, "metric": st.sampled_from(["water_level", "flow", "h2s"]),
        "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                           st.integers(-10**6, 10**6)),
        "unit": st.just("m"), "ts": stamp})

    @settings(max_examples=300, deadline=None)
    @given(fid=ids, seq=st.integers(0, 2**40), readings=st.lists(reading, min_size=1,
                                                                  max_size=5))
    def check(fid: str, seq: int, readings: list[dict[str, object]]) -> None:
        raw = json.dumps({"facility_id": fid, "kind": "drainage", "seq": seq,
                          "received_at": TS.isoformat(), "readings": readings}).encode()
        assert builder.readings_raw(raw) == builder.readings(ReadingBatch.model_validate_json(raw))

    check()


def test_raw_path_refuses_what_the_contract_refuses(registry: Registry) -> None:
    import json

    import pytest
    from pydantic import ValidationError

    builder = PointBuilder(registry)
    good = {"facility_id": "F-1", "kind": "drainage", "seq": 1, "received_at": TS.isoformat(),
            "readings": [{"sensor": "S-1", "metric": "flow", "value": 1.0, "unit": "L/s",
                          "ts": TS.isoformat()}]}
    bad = [
        {**good, "facility_id": "bad id,with=tag"},
        {**good, "kind": "airport"},
        {**good, "seq": -1},
        {**good, "readings": []},
        {**good, "extra": 1},
        {**good, "readings": [{**good["readings"][0], "ts": "2026-07-01T08:00:00"}]},  # no offset
        {**good, "readings": [{**good["readings"][0], "value": [1.0]}]},
        {**good, "readings": [{**good["readings"][0], "metric": "speed"}]},
    ]
    for doc in bad:
        with pytest.raises(ValidationError):
            builder.readings_raw(json.dumps(doc).encode())
    with pytest.raises(ValidationError, match="Invalid JSON"):  # not JSON at all
        builder.readings_raw(b"{not json")


def _raised(**extra: object) -> AlarmEvent:
    return AlarmEvent(event_id="e", alarm_id="a-1", event=AlarmEventType.RAISED, level="orange",
                      previous_level=None, facility_id="DR-BH-001", kind="drainage",
                      sensor="DR-BH-001-L1", metric="water_level", rule="value-upper",
                      value=2.8, threshold=2.7, unit="m", ts=TS, message="m", **extra)


def _split(line: str) -> tuple[str, str, str]:
    """(measurement and tags, fields, time) of one line (tags escape their spaces)."""
    head, rest = re.split(r"(?<!\\) ", line, maxsplit=1)
    fields, ts = rest.rsplit(" ", 1)
    return head, fields, ts


def _fields(line: str) -> str:
    return _split(line)[1]


def test_alarm_state_carries_what_the_active_alarm_table_shows(registry: Registry) -> None:
    f = registry.facility("DR-BH-001")
    assert f is not None and f.name_zh
    builder = PointBuilder(registry)
    line = builder.alarm_state(_raised(silenced=True, suppressed_by="a-fault"))
    assert line.startswith("alarm_state,category=facility,district=Binhai\\ Park,"
                           "facility=DR-BH-001,kind=drainage,rule=value-upper,"
                           "sensor=DR-BH-001-L1 ")
    fields = _fields(line)
    assert f'facility_name="{f.name}"' in fields and f'facility_name_zh="{f.name_zh}"' in fields
    assert "silenced=true" in fields and "suppressed=true" in fields and "held=false" in fields
    assert 'since="2026-07-01T08:00:00+00:00"' in fields and "since_ms=1782892800123i" in fields
    assert 'acked_by=""' in fields and 'level="orange"' in fields and "severity=3i" in fields
    event = _fields(builder.alarm(_raised()))
    assert f'facility_name="{f.name}"' in event and f'facility_name_zh="{f.name_zh}"' in event
    # Later events keep the episode's start: no since/since_ms, so last() keeps the raised one.
    later = _raised().model_copy(update={"event": AlarmEventType.DEESCALATED,
                                         "level": AlarmLevel.YELLOW})
    assert "since" not in _fields(builder.alarm_state(later)).replace("stale_since", "")


def test_names_come_from_the_builders_current_registry(registry: Registry) -> None:
    builder = PointBuilder(registry)
    doc = registry.model_dump(mode="json", by_alias=True, exclude_none=True)
    for fac in doc["facilities"]:
        if fac["id"] == "DR-BH-001":
            fac.update(name="Renamed well", name_zh="改名井", district="Elsewhere")
    builder.registry = Registry.model_validate(doc)  # a reload swaps the registry
    line = builder.alarm_state(_raised())
    assert ",district=Elsewhere," in line and 'facility_name="Renamed well"' in line
    assert 'facility_name_zh="改名井"' in line
    unknown = _raised().model_copy(update={"facility_id": "GONE-1"})
    line = builder.alarm_state(unknown)
    assert ",district=unknown," in line
    assert 'facility_name="GONE-1"' in line and 'facility_name_zh="GONE-1"' in line


def test_acknowledgement_lands_in_the_alarms_state_series(registry: Registry) -> None:
    from schemas.oncall import OnCallRecord, RecordType

    builder = PointBuilder(registry)
    state = builder.alarm_state(_raised())
    rec = OnCallRecord(record_id="0123abcd-0000-0000-0000-000000000000",
                       type=RecordType.ACKNOWLEDGED, ts=TS, alarm_id="a-1",
                       facility_id="DR-BH-001", sensor="DR-BH-001-L1", rule="value-upper",
                       category="facility", facility_kind="drainage", person="ann",
                       channel="cli", level="orange", detail="on my way",
                       state_ts=datetime(2026, 7, 1, 8, 0, 0, 124000, tzinfo=UTC))
    ack = builder.ack_state(rec)
    assert ack is not None
    # Same measurement and tags (series), just after the event: last() shows who acked.
    assert _split(ack)[0] == _split(state)[0]
    assert _fields(ack) == ('ack_comment="on my way",acked_at="2026-07-01T08:00:00.123000+00:00",'
                            'acked_by="ann",alarm_id="a-1",resolved=false')
    assert ack.endswith(" 1782892800124")
    assert builder.ack_state(rec.model_copy(update={"type": RecordType.DELIVERED})) is None
