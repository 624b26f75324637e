"""Rules that cross facilities (decision 0023): a site's excess over a regional background
station, dry-weather rules on the district's rain context, composites reading another
facility's rain gauge, district rules — with the facilities on one worker or split between
two that only talk through ``lifeline.context`` records (encoded and decoded as on Kafka)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.alarm import AlarmCategory, AlarmEvent, AlarmEventType
from schemas.codec import CONTEXT_RECORD
from schemas.context import ContextRecord, MemberAlarm
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.core.health import Counters
from services.processor.engine import AlarmEngine, FacilityState
from services.processor.engine.districts import DistrictBook
from services.processor.handlers import apply_context, context_records
from tests.support.engine_helpers import T0, lv

UNITS = {"pm10": "µg/m³", "rainfall": "mm", "water_level": "m"}
METRIC = {"PM": "pm10", "R": "rainfall", "L": "water_level"}


def facility(fid: str, kind: str, district: str, *sensors: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    return {"id": fid, "kind": kind, "name": fid, "district": district, "lat": 27.9,
            "lon": 120.8, "sensors": list(sensors), **extra}


def sensor(sid: str, *rules: dict[str, Any], interval: float = 60,
           rng: tuple[float, float] = (0, 2000)) -> dict[str, Any]:
    metric = METRIC[sid.rsplit("-", 1)[1].rstrip("0123456789")]
    return {"id": sid, "metric": metric, "unit": UNITS[metric], "range": list(rng),
            "interval_s": interval, "rules": list(rules)}


def registry(*facilities: dict[str, Any], district_rules: list[dict[str, Any]] | None = None
             ) -> Registry:
    return Registry.model_validate({"name": "t", "facilities": list(facilities),
                                    "district_rules": district_rules or []})


EXCESS_COUNT = {"id": "excess-count", "signal": "count", "of": "mean", "window_s": 900,
                "count_above": 80, "levels": [lv("yellow", 3, 0)],
                "minus": {"facility": "BG", "sensor": "BG-PM"}}
EXCESS_HOURLY = {"id": "excess-hourly", "signal": "mean", "window_s": 3600,
                 "levels": [lv("orange", 100, 80)], "minus": {"facility": "BG", "sensor": "BG-PM"}}


def dust() -> Registry:
    return registry(facility("BG", "site", "kg", sensor("BG-PM")),
                    facility("S1", "site", "kg", sensor("S1-PM", EXCESS_COUNT, EXCESS_HOURLY)))


class Worker:
    """One processor worker: its own engine, shared context and facility states."""

    def __init__(self, reg: Registry) -> None:
        self.engine = AlarmEngine(reg)
        self.states: dict[str, FacilityState] = {}
        self.events: list[AlarmEvent] = []
        self.records: list[tuple[str, bytes]] = []  # what it published to lifeline.context

    def report(self, fid: str, t_s: float, seq: int, *values: tuple[str, float]) -> None:
        kind = self.engine.registry.facility(fid).kind.value  # type: ignore[union-attr]
        ts = T0 + timedelta(seconds=t_s)
        batch = ReadingBatch(facility_id=fid, kind=kind, seq=seq, received_at=ts, readings=[
            Reading(sensor=s, metric=METRIC[s.rsplit("-", 1)[1].rstrip("0123456789")],
                    unit=UNITS[METRIC[s.rsplit("-", 1)[1].rstrip("0123456789")]], value=v,
                    ts=ts) for s, v in values])
        out = self.engine.evaluate(batch, self.states.setdefault(fid, FacilityState()))
        self.events += out.events
        self.records += [(d, CONTEXT_RECORD.encode(ContextRecord(r)))
                         for d, r in context_records(out)]

    def receive(self, records: list[tuple[str, bytes]]) -> None:
        counters = Counters()
        for _key, raw in records:
            assert apply_context(self.engine.context, raw, counters, "test") is None


def facility_events(events: list[AlarmEvent], rule: str) -> list[tuple[str, str | None]]:
    return [(e.event.value, e.level.value if e.level else None) for e in events
            if e.rule == rule]


def run_dust(split: bool, background: float, site: float, minutes: int = 120
             ) -> list[AlarmEvent]:
    """Background then site each minute; on two workers the background's records reach the
    site's worker after each minute (as-of: the site reads the newest at or before)."""
    reg = dust()
    a = Worker(reg)
    b = Worker(reg) if split else a
    for m in range(minutes):
        a.report("BG", m * 60, m + 1, ("BG-PM", background))
        if split:
            b.receive(a.records)
            a.records.clear()
        b.report("S1", m * 60, m + 1, ("S1-PM", site))
    return b.events


def test_the_background_alone_raises_nothing() -> None:
    # A regional haze at 160 µg/m³ over every site: no excess, no site alarm of either rule.
    assert run_dust(False, background=160, site=175) == []


@pytest.mark.parametrize("split", [False, True], ids=["one worker", "two workers"])
def test_a_site_far_above_the_background_counts_its_excesses(split: bool) -> None:
    events = run_dust(split, background=60, site=200)
    # 15-minute means of the excess (140) above 80: the third period of the day is yellow.
    [count] = [e for e in events if e.rule == "excess-count"]
    assert count.level is not None and count.level.value == "yellow" and count.value == 3
    assert count.ts == T0 + timedelta(minutes=45)
    [hourly] = [e for e in events if e.rule == "excess-hourly"]
    assert hourly.level is not None and hourly.level.value == "orange"
    assert hourly.value == pytest.approx(140)


def test_one_worker_and_two_give_the_same_alarms() -> None:
    one = run_dust(False, background=60, site=200)
    two = run_dust(True, background=60, site=200)
    assert [e.event_id for e in one] == [e.event_id for e in two]


def test_an_unknown_background_holds_the_rule() -> None:
    reg = dust()
    w = Worker(reg)  # the background never reports (or its records have not arrived)
    for m in range(90):
        w.report("S1", m * 60, m + 1, ("S1-PM", 400))
    assert [e for e in w.events if e.rule.startswith("excess")] == []


def test_a_reference_must_exist_and_measure_the_same() -> None:
    with pytest.raises(ValidationError, match="unknown facility NOPE"):
        registry(facility("S1", "site", "kg", sensor("S1-PM", {
            **EXCESS_HOURLY, "minus": {"facility": "NOPE", "sensor": "X"}})))
    with pytest.raises(ValidationError, match="measures rainfall"):
        registry(facility("G", "drainage", "kg", sensor("G-R", rng=(0, 50))),
                 facility("S1", "site", "kg", sensor("S1-PM", {
                     **EXCESS_HOURLY, "minus": {"facility": "G", "sensor": "G-R"}})))
    with pytest.raises(ValidationError, match="minus goes with"):
        registry(facility("S1", "site", "kg", sensor("S1-PM", {
            "signal": "step", "levels": [lv("blue", 1)], "minus": {"facility": "BG",
                                                                    "sensor": "BG-PM"}})))


# ------------------------------------------------------------------ dry weather
DRY_FLOW = {"id": "dry-weather-flow", "signal": "mean", "window_s": 3600,
            "levels": [lv("blue", 0.12, 0.08)], "when_dry_for_s": 86400}


def storm() -> Registry:
    return registry(
        facility("GAUGE", "drainage", "kg", sensor("GAUGE-R", rng=(0, 50), interval=300)),
        facility("MH", "drainage", "kg", sensor("MH-L", DRY_FLOW, rng=(0, 7))))


def run_storm(split: bool, rain_at_h: float | None, hours: int = 36) -> list[AlarmEvent]:
    """A gauge every 5 minutes and a storm pipe standing at 0.2 m (a misconnection)."""
    reg = storm()
    a = Worker(reg)
    b = Worker(reg) if split else a
    for n in range(hours * 12):
        t = n * 300
        rain = 5.0 if rain_at_h is not None and rain_at_h * 3600 <= t < rain_at_h * 3600 + 3600 \
            else 0.0
        a.report("GAUGE", t, n + 1, ("GAUGE-R", rain))
        if split:
            b.receive(a.records)
            a.records.clear()
        b.report("MH", t, n + 1, ("MH-L", 0.2))
    return [e for e in b.events if e.rule == "dry-weather-flow"]


@pytest.mark.parametrize("split", [False, True], ids=["one worker", "two workers"])
def test_a_dry_weather_rule_waits_for_a_known_dry_day(split: bool) -> None:
    [raised] = run_storm(split, rain_at_h=None)
    # The gauges were first heard from at 0 (their first full hour): dry for a day at 24 h.
    assert raised.event is AlarmEventType.RAISED
    assert timedelta(hours=24) <= raised.ts - T0 <= timedelta(hours=25)


def test_rain_restarts_the_dry_count() -> None:
    [raised] = run_storm(True, rain_at_h=6)
    # 4 × 5 mm an hour is 20 mm/h at 6-7 h: dry again 24 h after the last rainy reading.
    assert timedelta(hours=30) <= raised.ts - T0 <= timedelta(hours=32)


def test_a_storms_first_millimetres_close_the_dry_gate_before_the_pipe_fills() -> None:
    """A day dry, then a storm begins: 0.5 mm in the first five minutes (under the 2.5 mm/h
    rain context) already ends the dry weather, so the pipe filling with the storm's water
    is not a dry-weather flow."""
    reg = storm()
    a, b = Worker(reg), Worker(reg)
    for n in range(26 * 12):
        t = n * 300
        storm_on = n >= 25 * 12
        a.report("GAUGE", t, n + 1, ("GAUGE-R", 0.5 if storm_on else 0.0))
        b.receive(a.records)
        a.records.clear()
        level = 0.03 + (0.5 * (n - 25 * 12 + 1) if storm_on else 0.0)
        b.report("MH", t, n + 1, ("MH-L", level))
    assert [e for e in b.events if e.rule == "dry-weather-flow"] == []


def test_a_day_with_every_gauge_silent_is_not_a_dry_day() -> None:
    """The gauges fall silent for three hours (it may have rained): dry counts again from
    when they report again — so a manhole's water at that moment is not yet a misconnection."""
    from services.processor.engine.context import SharedContext

    ctx = SharedContext()
    h = 3_600_000
    for k in range(30):
        ctx.apply("kg", k * h, raining=False)
    assert ctx.dry_for_ms("kg", 29 * h) == 29 * h
    ctx.apply("kg", 33 * h, raining=False)  # back after a 4-hour gap
    assert ctx.dry_for_ms("kg", 33 * h) == 0
    ctx.apply("kg", 32 * h, raining=False)  # a late record of the new run extends it
    assert ctx.dry_for_ms("kg", 33 * h) == h
    ctx.apply("kg", 20 * h, raining=False)  # one of the old run does not
    assert ctx.dry_for_ms("kg", 33 * h) == h


def test_without_a_gauge_dry_weather_is_not_assumed() -> None:
    reg = storm()
    w = Worker(reg)
    for n in range(36 * 12):
        w.report("MH", n * 300, n + 1, ("MH-L", 0.2))
    assert [e for e in w.events if e.rule == "dry-weather-flow"] == []


# ------------------------------------------------------------------ a composite reading another facility
def test_a_composite_reads_another_facilitys_rain_gauge() -> None:
    comp = {"id": "level-without-rain", "level": "yellow", "source": "test",
            "all_of": [{"sensor": "MH-L", "op": ">=", "value": 1.0},
                       {"facility": "GAUGE", "sensor": "GAUGE-R", "signal": "sum",
                        "window_s": 3600, "op": "<=", "value": 1.0}]}
    reg = registry(
        facility("GAUGE", "drainage", "kg", sensor("GAUGE-R", rng=(0, 50), interval=300)),
        facility("MH", "drainage", "kg", sensor("MH-L", rng=(0, 7)), composites=[comp]))
    a, b = Worker(reg), Worker(reg)
    b.report("MH", 0, 1, ("MH-L", 1.5))
    assert b.events == []  # the gauge is not known yet: the condition does not hold
    for n in range(13):
        a.report("GAUGE", n * 300, n + 1, ("GAUGE-R", 0.0))
    b.receive(a.records)
    b.report("MH", 3600, 2, ("MH-L", 1.5))
    [ev] = b.events
    assert ev.rule == "level-without-rain" and ev.level is not None
    assert "GAUGE/GAUGE-R" in ev.message


# ------------------------------------------------------------------ district rules
RAINSTORM = {"id": "rainstorm", "name": "rainstorm", "name_zh": "暴雨", "kind": "drainage",
             "members": {"metric": ["rainfall"]}, "groups": True, "source": "test"}
WATERLOGGING = {"id": "waterlogging", "name": "waterlogging", "name_zh": "内涝",
                "kind": "drainage", "members": {"metric": ["water_level"]},
                "at_least": "orange", "min_facilities": 2, "level": "red", "source": "test"}
RAIN_RULES = [{"signal": "sum", "window_s": 3600, "levels": [lv("blue", 20, 15)]},
              {"signal": "sum", "window_s": 10800, "levels": [lv("orange", 50, 45),
                                                             lv("red", 100, 90)]}]
LEVEL_RULE = {"levels": [lv("yellow", 2.0, 1.9), lv("orange", 2.5, 2.4)]}


def town() -> Registry:
    fs = []
    for d in ("east", "west"):
        for n in (1, 2, 3):
            fid = f"{d}{n}"
            fs.append(facility(fid, "drainage", d,
                               sensor(f"{fid}-R", *RAIN_RULES, rng=(0, 50), interval=300),
                               sensor(f"{fid}-L", LEVEL_RULE, rng=(0, 7))))
    return registry(*fs, district_rules=[RAINSTORM, WATERLOGGING])


def run_town(workers: int) -> tuple[list[AlarmEvent], list[AlarmEvent]]:
    """A storm over both districts: every gauge 10 mm per 5 minutes for two hours, levels
    rising to orange at two manholes of the east. Facilities alternate between workers; one
    desk folds the members in the order the workers published them."""
    reg = town()
    ws = [Worker(reg) for _ in range(workers)]
    book = DistrictBook(reg)
    district: list[AlarmEvent] = []
    for n in range(24):
        t = n * 300
        for i, f in enumerate(reg.facilities):
            level = 2.6 if f.id in ("east1", "east2") and n >= 12 else 1.0
            ws[i % workers].report(f.id, t, n + 1, (f"{f.id}-R", 10.0), (f"{f.id}-L", level))
        for w in ws:
            for _key, raw in w.records:
                rec = CONTEXT_RECORD.decode(raw).root
                if isinstance(rec, MemberAlarm):
                    district += book.apply(rec)
            w.records.clear()
    return [e for w in ws for e in w.events], district


@pytest.mark.parametrize("workers", [1, 2], ids=["one worker", "two workers"])
def test_a_storm_gives_one_rainstorm_alarm_per_district(workers: int) -> None:
    facility_events, district = run_town(workers)
    gauges = [e for e in facility_events if e.metric is not None and e.metric.value == "rainfall"]
    assert len({e.alarm_id for e in gauges}) == 12  # two rules at six gauges …
    assert {e.grouped_into for e in gauges} == {"rainstorm"}  # … recorded, paged by the district
    rain = [e for e in district if e.rule == "rainstorm"]
    assert {e.district for e in rain} == {"east", "west"}
    for d in ("east", "west"):
        mine = [e for e in rain if e.district == d]
        assert len({e.alarm_id for e in mine}) == 1  # one alarm per district
        assert [(e.event.value, e.level.value if e.level else None) for e in mine] == [
            ("raised", "blue"), ("escalated", "orange"), ("escalated", "red")]
        assert all(e.category is AlarmCategory.DISTRICT and e.facility_id == f"district-{d}"
                   for e in mine)
    levels = [e for e in facility_events if e.metric is not None
              and e.metric.value == "water_level"]
    assert all(e.grouped_into is None for e in levels)  # not grouped: paged as always
    [flood] = [e for e in district if e.rule == "waterlogging"]
    assert flood.district == "east" and flood.level is not None and flood.level.value == "red"
    assert flood.value == 2 and "内涝" in flood.message and "east" in flood.message


def test_one_worker_and_two_give_the_same_district_alarms() -> None:
    _, one = run_town(1)
    _, two = run_town(2)
    assert sorted(e.event_id for e in one) == sorted(e.event_id for e in two)


def _member(fid: str, level: str | None, t_s: float, rule: str = "sum-3600s-upper",
            district: str = "east") -> MemberAlarm:
    return MemberAlarm(district=district, facility_id=fid, kind="drainage", sensor=f"{fid}-R",
                       metric="rainfall", rule=rule, level=level,
                       ts=T0 + timedelta(seconds=t_s), alarm_id=f"a-{fid}",
                       district_rules=["rainstorm"])


def test_the_district_book_is_idempotent_and_replays_the_same() -> None:
    records = [_member("east1", "blue", 0), _member("east2", "orange", 60),
               _member("east1", None, 120), _member("east2", None, 180)]
    book = DistrictBook(town())
    first = [e for r in records for e in book.apply(r)]
    assert [(e.event.value, e.level.value if e.level else None) for e in first] == [
        ("raised", "blue"), ("escalated", "orange"), ("cleared", None)]
    again = book.apply(records[1])  # redelivered out of order: older than known
    assert again == []
    replayed = DistrictBook(town())  # a restart reads the partition again
    assert [e.event_id for r in records for e in replayed.apply(r)] == [e.event_id for e in first]


def test_a_removed_district_rule_clears_its_alarm() -> None:
    book = DistrictBook(town())
    [raised] = book.apply(_member("east1", "orange", 0))
    reg = town().model_copy(update={"district_rules": []})
    book.use(reg)
    [cleared] = book.apply(_member("east2", "blue", 60))
    assert cleared.event is AlarmEventType.CLEARED and cleared.alarm_id == raised.alarm_id


def test_a_district_rule_names_known_districts() -> None:
    with pytest.raises(ValidationError, match="unknown district"):
        registry(facility("X", "drainage", "east", sensor("X-L", rng=(0, 7))),
                 district_rules=[{**RAINSTORM, "districts": ["north"]}])


def test_the_district_desk_counts_what_it_cannot_read_and_goes_on() -> None:
    """Garbage on lifeline.context (the context feed dead-letters it): the desk counts it,
    says where it was, produces nothing for it, and the next member still counts."""
    import asyncio

    from services.core.health import Counters
    from services.core.settings import KafkaSettings
    from services.processor.district_desk import COUNTERS, DistrictDesk

    sent: list[bytes] = []

    class Sink:
        async def send(self, *, key: bytes | None, value: bytes) -> None:
            sent.append(value)

    reg = town()
    counters = Counters(*COUNTERS)
    desk = DistrictDesk(KafkaSettings(bootstrap="127.0.0.1:9092"), lambda: reg, Sink(),
                        counters)
    good = CONTEXT_RECORD.encode(ContextRecord(_member("east1", "orange", 0)))

    async def go() -> None:
        for offset, raw in enumerate([b"\x00not json", b'{"type":"member"}', None, good]):
            await desk.take(0, offset, raw)

    asyncio.run(go())
    assert counters.get("district_rejected") == 2 and counters.get("district_members") == 1
    [ev] = sent
    assert b'"rule":"rainstorm"' in ev and b'"category":"district"' in ev
