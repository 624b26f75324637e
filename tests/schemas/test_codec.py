"""schemas/codec.py and schemas/topics.py: one codec per contract, the fast paths equal to
pydantic's on valid and invalid inputs, one timestamp parser."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas import codec
from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.common import MAX_EPOCH_MS, epoch_ms, parse_timestamp, to_epoch_ms
from schemas.context import ContextRecord, DistrictRain, MemberAlarm, SharedSignal
from schemas.deadletter import Problem, RejectReason, dead_letter
from schemas.oncall import AckRequest, OnCallRecord, RecordType
from schemas.reading import Reading, ReadingBatch
from schemas.topics import BY_NAME, TABLE, telemetry_topic
from services.core import topics as core_topics

TS = datetime(2026, 7, 1, 8, 0, 0, 123000, tzinfo=UTC)


def _models() -> list[tuple[codec.Codec[Any], BaseModel]]:
    ev = AlarmEvent(event_id="e", alarm_id="a-1", event=AlarmEventType.RAISED, level="orange",
                    previous_level=None, facility_id="DR-BH-001", kind="drainage",
                    sensor="DR-BH-001-L1", metric="water_level", rule="value-upper",
                    value=2.8, threshold=2.7, unit="m", ts=TS, message="水位 m")
    rec = OnCallRecord(record_id="0123abcd-0000-0000-0000-000000000000",
                       type=RecordType.ACKNOWLEDGED, ts=TS, alarm_id="a-1",
                       facility_id="DR-BH-001", sensor="DR-BH-001-L1", person="ann",
                       level="orange", detail="on my way")
    ack = AckRequest(alarm_id="a-1", facility_id="DR-BH-001", by="ann", ts=TS)
    rain = ContextRecord(DistrictRain(district="Lucheng", ts=TS, mm_per_h=12.5,
                                      facility_id="DR-RG-001", sensor="DR-RG-001-R1"))
    shared = ContextRecord(SharedSignal(district="Airport New Area", facility_id="AB-KG-001",
                                        sensor="AB-KG-001-PM10", spec="mean-900s-60", ts=TS,
                                        value=61.5))
    member = ContextRecord(MemberAlarm(district="Lucheng", facility_id="DR-RG-001",
                                       kind="drainage", sensor="DR-RG-001-R1", metric="rainfall",
                                       rule="sum-10800s-upper", level="orange", ts=TS,
                                       alarm_id="a-2", district_rules=["rainstorm"]))
    dl = dead_letter(problems=[Problem(reason=RejectReason.SCHEMA, detail="seq: bad")],
                     service="ingest", source="mqtt:x", payload=b"\x00{bad", received_at=TS,
                     keep_bytes=1000, facility_id="DR-BH-001")
    batch = ReadingBatch(facility_id="DR-BH-001", kind="drainage", seq=7, received_at=TS,
                         readings=[Reading(sensor="DR-BH-001-L1", metric="water_level",
                                           value=1.5, unit="m", ts=TS)])
    return [(codec.ALARM_EVENT, ev), (codec.ONCALL_RECORD, rec), (codec.ACK_REQUEST, ack),
            (codec.CONTEXT_RECORD, rain), (codec.CONTEXT_RECORD, shared),
            (codec.CONTEXT_RECORD, member), (codec.DEAD_LETTER, dl),
            (codec.READING_BATCH, batch)]


@pytest.mark.parametrize(("c", "model"), _models(), ids=lambda x: repr(x)[:30])
def test_every_contract_round_trips(c: codec.Codec[Any], model: BaseModel) -> None:
    raw = c.encode(model)
    assert raw == model.model_dump_json().encode()  # the bytes every consumer already reads
    assert c.decode(raw) == model
    assert type(c.decode(raw)) is c.model
    with pytest.raises(ValidationError):
        c.decode(b"{not json")
    with pytest.raises(ValidationError):
        c.decode(b"{}")


def test_health_and_tick_round_trip() -> None:
    rec = {"service": "ingest", "instance": "h-1", "ts": 1_782_892_800_000, "status": "ok",
           "healthy": True, "warnings": 0, "counters": {"accepted_readings": 3}}
    assert codec.HEALTH.decode(codec.HEALTH.encode(rec)) == rec
    for bad in [b"[]", b"{not json", json.dumps({**rec, "counters": []}).encode(),
                json.dumps({k: v for k, v in rec.items() if k != "ts"}).encode(),
                json.dumps({**rec, "ts": -1}).encode()]:
        with pytest.raises(ValueError, match=r"health record|Expecting|epoch") as err:
            codec.HEALTH.decode(bad)
        # json's own error for not-JSON (undecodable_event), else a plain ValueError
        assert isinstance(err.value, json.JSONDecodeError) == (bad == b"{not json")
    assert codec.TICK.decode(codec.TICK.encode(1_782_892_800_000)) == 1_782_892_800_000
    assert [codec.TICK.decode(b) for b in (b"", b"12a", b"-1", b"1" * 17, "١".encode())] == \
        [None] * 5


def test_the_topic_table_covers_every_topic() -> None:
    assert tuple(t.name for t in TABLE) == core_topics.ALL
    assert len(BY_NAME) == len(TABLE) == 10
    assert BY_NAME[core_topics.READINGS].codec is codec.READING_BATCH
    assert BY_NAME[core_topics.ALARMS].codec is codec.ALARM_EVENT
    assert BY_NAME[core_topics.ACKS].codec is codec.ACK_REQUEST
    assert BY_NAME[core_topics.ONCALL].codec is codec.ONCALL_RECORD
    assert BY_NAME[core_topics.CONTEXT].codec is codec.CONTEXT_RECORD
    assert BY_NAME[core_topics.READINGS_DLQ].codec is codec.DEAD_LETTER
    assert BY_NAME[core_topics.HEALTH].codec is codec.HEALTH
    assert BY_NAME[core_topics.TICKS].codec is codec.TICK
    assert BY_NAME[core_topics.ORDERS].codec is codec.ORDER_EVENT
    assert BY_NAME[core_topics.READINGS_DLQ].dead_letters is None  # no loop


def test_telemetry_topic() -> None:
    assert telemetry_topic("lifeline/drainage/DR-BH-001/telemetry") == ("drainage", "DR-BH-001")
    for bad in ["lifeline/airport/X/telemetry", "lifeline/drainage/X/status",
                "other/drainage/X/telemetry", "lifeline/drainage/X/telemetry/more",
                "lifeline/drainage/telemetry", ""]:
        assert telemetry_topic(bad) is None


stamps = st.one_of(
    st.integers(-3, MAX_EPOCH_MS + 3), st.just(MAX_EPOCH_MS - 1), st.just(MAX_EPOCH_MS),
    st.booleans(), st.floats(0, 2e12), st.none(), st.text(max_size=6),
    st.sampled_from(["2026-07-01T08:00:00Z", "2026-07-01T16:00:00.5+08:00",
                     "2026-07-01T08:00:00", "0001-01-01T00:00:00+00:01",
                     "9999-12-31T23:59:59-23:59", "2026-13-01T00:00:00Z"]),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()))


@settings(max_examples=500, deadline=None)
@given(stamps)
def test_one_timestamp_parser(value: Any) -> None:
    """epoch_ms (the writer's) accepts exactly what parse_timestamp (pydantic's) does."""
    try:
        expected: int | None = to_epoch_ms(parse_timestamp(value))
    except ValueError:
        expected = None
    try:
        got: int | None = epoch_ms(value)
    except ValueError:
        got = None
    assert got == expected


_ids = st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}\Z"),
                 st.sampled_from(["", "bad id", "a,b", "x" * 65, "-lead"]), st.integers())
_values = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-10**6, 10**6), st.sampled_from([math.inf, math.nan, 10**400]),
                    st.booleans(), st.none(), st.text(max_size=3), st.lists(st.floats(), max_size=1))


_good_ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}\Z")
_good_ts = st.one_of(st.integers(0, MAX_EPOCH_MS - 1),
                     st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()))


@st.composite
def _reading(draw: st.DrawFn) -> dict[str, Any]:
    r: dict[str, Any] = {
        "sensor": draw(_good_ids), "metric": draw(st.sampled_from(["water_level", "flow", "h2s"])),
        "value": draw(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                st.integers(-10**6, 10**6))),
        "unit": draw(st.sampled_from(["m", "L/s"])), "ts": draw(_good_ts)}
    bend = draw(st.integers(0, 9))  # one thing bent, or none
    if bend == 1:
        r["sensor"] = draw(_ids)
    elif bend == 2:
        r["metric"] = draw(st.sampled_from(["speed", 3, None]))
    elif bend == 3:
        r["value"] = draw(_values)
    elif bend == 4:
        r["unit"] = draw(st.sampled_from([5, None, ["m"]]))
    elif bend == 5:
        r["ts"] = draw(stamps)
    elif bend == 6:
        r.pop(draw(st.sampled_from(sorted(r))))
    elif bend == 7:
        r["extra"] = 1
    return r


@st.composite
def _batch(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = {
        "facility_id": draw(_good_ids),
        "kind": draw(st.sampled_from(["drainage", "bridge", "sewage"])),
        "seq": draw(st.integers(0, 2**40)), "received_at": draw(_good_ts),
        "readings": draw(st.lists(_reading(), min_size=1, max_size=3))}
    bend = draw(st.integers(0, 9))
    if bend == 1:
        doc["facility_id"] = draw(_ids)
    elif bend == 2:
        doc["kind"] = draw(st.sampled_from(["airport", 1, None]))
    elif bend == 3:
        doc["seq"] = draw(st.one_of(st.integers(-2, -1), st.booleans(), st.just("1"),
                                    st.just(1.0)))
    elif bend == 4:
        doc["received_at"] = draw(stamps)
    elif bend == 5:
        doc["readings"] = draw(st.sampled_from([[], {}, None, [1], "x"]))
    elif bend == 6:
        doc.pop(draw(st.sampled_from(sorted(doc))))
    elif bend == 7:
        doc["extra"] = 1
    return json.dumps(doc).encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(_batch())
def test_fast_decoder_agrees_with_pydantic(raw: bytes) -> None:
    """What decode_plain accepts pydantic accepts with the same values; what pydantic
    refuses decode_plain leaves to pydantic (``None``)."""
    plain = codec.READING_BATCH.decode_plain(raw)
    try:
        model = codec.READING_BATCH.decode(raw)
    except ValidationError:
        assert plain is None
        return
    if plain is not None:
        strict = codec.READING_BATCH.plain(model)
        assert plain[:3] == strict[:3]
        assert [(s, m, float(v), t) for s, m, v, t in plain.readings] == strict.readings


def test_fast_decoder_takes_the_everyday_batch() -> None:
    model = _models()[-1][1]
    assert isinstance(model, ReadingBatch)
    plain = codec.READING_BATCH.decode_plain(codec.READING_BATCH.encode(model))
    assert plain == codec.PlainBatch("DR-BH-001", "drainage", 7,
                                     [("DR-BH-001-L1", "water_level", 1.5, to_epoch_ms(TS))])
    for bad in [b"{not json", b"[1]", b"", b"{\"a\": NaN}"]:
        assert codec.READING_BATCH.decode_plain(bad) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}\Z"),
                          st.sampled_from(["water_level", "flow", "h2s"]),
                          st.floats(allow_nan=False, allow_infinity=False)),
                min_size=1, max_size=4),
       st.integers(0, 2**62), st.datetimes(min_value=datetime(1971, 1, 1),
                                           max_value=datetime(2200, 1, 1),
                                           timezones=st.just(UTC)))
def test_fast_encoder_equals_the_models_encoding(readings: list[tuple[str, str, float]],
                                                 seq: int, ts: datetime) -> None:
    from schemas.kinds import METRICS

    rows = [(s, m, v, METRICS[m].unit) for s, m, v in readings]  # type: ignore[index]
    raw = codec.READING_BATCH.encode_checked("F-1", "drainage", seq, TS, ts, [
        {"sensor": s, "metric": m, "value": v, "unit": u} for s, m, v, u in rows])
    model = ReadingBatch(facility_id="F-1", kind="drainage", seq=seq, received_at=TS,
                         readings=[Reading(sensor=s, metric=m, value=v, unit=u, ts=ts)
                                   for s, m, v, u in rows])
    assert codec.READING_BATCH.decode(raw) == \
        codec.READING_BATCH.decode(codec.READING_BATCH.encode(model))
    with pytest.raises(ValueError, match="Out of range float"):
        codec.READING_BATCH.encode_checked("F-1", "drainage", seq, TS, ts,
                                           [{"sensor": "S-1", "metric": "flow",
                                             "value": math.inf, "unit": "L/s"}])


def test_a_rain_record_written_before_heartbeats_reads_as_rain() -> None:
    old = (b'{"type":"rain","district":"Lucheng","ts":"2026-07-01T00:00:00Z","mm_per_h":3.0,'
           b'"facility_id":"DR-RG-001","sensor":"DR-RG-001-R1"}')
    rec = codec.CONTEXT_RECORD.decode(old).root
    assert isinstance(rec, DistrictRain) and rec.raining
    with pytest.raises(ValidationError):
        codec.CONTEXT_RECORD.decode(b'{"type":"weather","district":"x"}')


def test_a_pack_unpacks_to_its_batches_and_never_to_nothing() -> None:
    """``lifeline.readings`` packs (services/ingest/pack.py): one batch per line; a value
    without a newline is one batch; blank lines are dropped, but a value of nothing else is
    returned whole so its consumer dead-letters it instead of losing it unrecorded."""
    a, b = b'{"facility_id":"F-1"}', b'{"facility_id":"F-2"}'
    assert codec.READING_BATCH.unpack(codec.READING_BATCH.pack([a, b])) == [a, b]
    assert codec.READING_BATCH.unpack(a) == [a]
    assert codec.READING_BATCH.unpack(a + b"\n\n" + b + b"\n") == [a, b]
    for blank in (b"", b"\n", b"\n \n"):
        [whole] = codec.READING_BATCH.unpack(blank)
        assert whole == blank
        with pytest.raises(ValidationError, match=r"Invalid JSON|EOF"):
            codec.READING_BATCH.decode(whole)


@pytest.mark.unit
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
                          st.floats(allow_nan=False, allow_infinity=False) | st.integers(
                              -2**53, 2**53)), min_size=1, max_size=12),
       st.integers(0, 2**40))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_a_stand_in_gateways_report_is_the_json_it_means(
        readings: list[tuple[str, float | int]], seq: int) -> None:
    """encode_plain writes orjson's compact JSON: the same document json.dumps wrote."""
    rs = [{"sensor": s, "metric": "water_level", "value": v, "unit": "m"} for s, v in readings]
    raw = codec.TELEMETRY.encode_plain("2026-12-03T18:00:00.000Z", seq, rs)
    assert json.loads(raw) == {"ts": "2026-12-03T18:00:00.000Z", "seq": seq, "readings": rs}


@pytest.mark.unit
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_stand_in_gateways_non_finite_value_is_sent_for_ingest_to_refuse(bad: float) -> None:
    """Not ``null`` (what orjson would write): the value as a gateway's JSON library sends
    it, which the contract refuses."""
    raw = codec.TELEMETRY.encode_plain(
        0.0, 1, [{"sensor": "s1", "metric": "water_level", "value": bad, "unit": "m"}])
    assert b"null" not in raw
    value = json.loads(raw)["readings"][0]["value"]
    assert isinstance(value, float) and not math.isfinite(value)
    with pytest.raises(ValidationError):
        codec.TELEMETRY.decode(raw)
