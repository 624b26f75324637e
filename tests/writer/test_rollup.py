"""The writer's 1-minute tier (services/writer/rollup.py): mean/min/max per series and
minute as the continuous query wrote them, closed by event time, late readings within the
lateness folded in, commits held back to the oldest open minute, and a replay from the
commit writing the same values."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from schemas.registry import Registry
from schemas.storage import TAGS, Measurement
from services.writer.points import PointBuilder
from services.writer.rollup import (
    HOUR_MS,
    HourRollup,
    MinuteRollup,
    Recompute,
    recompute_lines,
    recompute_query,
)

M0 = 1_780_000_020_000 - 1_780_000_020_000 % 60_000  # a minute's start (ms)
TAGS_A = ",district=d1,facility=F1,kind=drainage,metric=water_level,sensor=F1-L1"
TAGS_B = ",district=d1,facility=F1,kind=drainage,metric=flow,sensor=F1-Q1"


def line(tags: str, t_ms: int, value: float, extra: str = "") -> str:
    return f"reading{tags} {extra}seq=1i,value={value} {t_ms}"


def out(tags: str, minute: int, mx: float, mean: float, mn: float) -> str:
    def f(v: float) -> str:  # line protocol's float, integral ones without ".0"
        return repr(float(v)).removesuffix(".0")

    return f"reading_1m{tags} max={f(mx)},mean={f(mean)},min={f(mn)} {minute}"


def test_a_minute_is_written_once_closed_with_the_continuous_querys_fields() -> None:
    r = MinuteRollup(lateness_s=0)
    r.add("p", 0, [line(TAGS_A, M0, 0.4), line(TAGS_B, M0, 10.0, "baseline=3,")])
    r.add("p", 1, [line(TAGS_A, M0 + 10_000, 0.8), line(TAGS_B, M0 + 59_999, 20.0)])
    r.add("p", 2, [line(TAGS_A, M0 + 30_000, 1.2), line(TAGS_A, M0 + 50_000, 1.6)])
    # Not closed before the minute's end, by event time (the wall clock is later).
    assert r.close("p", M0 + 600_000, caught_up=False) == []
    r.add("p", 3, [line(TAGS_A, M0 + 60_000, 5.0)])  # the next minute: the first closes
    assert r.close("p", M0 + 600_000, caught_up=False) == [
        out(TAGS_A, M0, 1.6, 1.0, 0.4), out(TAGS_B, M0, 20.0, 15.0, 10.0)]
    assert r.close("p", M0 + 600_000, caught_up=False) == []  # written once
    assert r.open_minutes() == 1


def test_late_reading_within_the_lateness_is_folded_in_a_later_one_is_not() -> None:
    r = MinuteRollup(lateness_s=30)
    r.add("p", 0, [line(TAGS_A, M0 + 5_000, 2.0)])
    r.add("p", 1, [line(TAGS_A, M0 + 60_000 + 20_000, 9.0)])  # next minute, 20 s in
    assert r.close("p", M0 + 600_000, caught_up=False) == []  # 20 s < 30 s lateness
    r.add("p", 2, [line(TAGS_A, M0 + 1_000, -1.0)])  # out of order, still in time
    r.add("p", 3, [line(TAGS_A, M0 + 60_000 + 30_000, 9.0)])
    assert r.close("p", M0 + 600_000, caught_up=False) == [out(TAGS_A, M0, 2.0, 0.5, -1.0)]
    r.add("p", 4, [line(TAGS_A, M0 + 2_000, 100.0)])  # too late: stored raw, not folded
    assert r.late == 1
    assert r.close("p", M0 + 600_000, caught_up=True) == [out(TAGS_A, M0 + 60_000, 9, 9, 9)]


def test_the_watermark_never_runs_ahead_of_the_wall_clock_and_is_it_when_caught_up() -> None:
    r = MinuteRollup(lateness_s=0)
    r.add("p", 0, [line(TAGS_A, M0, 1.0)])
    r.add("p", 1, [line(TAGS_B, M0 + 300_000, 1.0)])  # a gateway whose clock is 5 min fast
    assert r.close("p", M0 + 30_000, caught_up=False) == []  # wall clock: minute not over
    # A quiet partition (nothing more on the broker): its minute closes by the wall clock.
    q = MinuteRollup(lateness_s=10)
    q.add("q", 0, [line(TAGS_A, M0, 1.0)])
    assert q.close("q", M0 + 69_999, caught_up=True) == []
    assert q.close("q", M0 + 70_000, caught_up=True) == [out(TAGS_A, M0, 1, 1, 1)]


def test_commit_is_held_back_to_the_oldest_open_minute_with_the_closed_one() -> None:
    r = MinuteRollup(lateness_s=0)
    r.assign("p", None, committed=False)
    assert r.commit("p", 0) == (0, "-1")
    r.add("p", 10, [line(TAGS_A, M0, 1.0)])
    r.add("p", 11, [line(TAGS_A, M0 + 60_000, 2.0)])
    assert r.commit("p", 12) == (10, "-1")  # minute M0 open: replay from its first record
    r.close("p", M0 + 10**6, caught_up=False)  # watermark M0+60 s closes M0
    assert r.commit("p", 12) == (11, str(M0))
    r.close("p", M0 + 10**6, caught_up=True)
    assert r.commit("p", 12) == (12, str(M0 + 60_000))  # nothing open: the fetch position


def test_a_replay_from_the_commit_writes_the_same_values() -> None:
    records = [[line(TAGS_A, M0 + i * 7_000 % 120_000, 0.1 * i),
                line(TAGS_B, M0 + i * 5_000, 3.0 + i)] for i in range(40)]

    def run(r: MinuteRollup, start: int, stop: int) -> list[str]:
        written = []
        for offset in range(start, stop):
            r.add("p", offset, records[offset])
            written += r.close("p", M0 + 10**7, caught_up=False)
        return written

    whole = MinuteRollup(lateness_s=15)
    expected = run(whole, 0, 40)
    # A writer that stopped after offset 24 (its last commit, with its metadata) …
    first = MinuteRollup(lateness_s=15)
    before = run(first, 0, 25)
    offset, metadata = first.commit("p", 25)
    assert offset < 25  # held back: a minute was open
    # … and its successor, from that commit: every minute written, each with one value.
    again = MinuteRollup(lateness_s=15)
    again.assign("p", metadata, committed=True)
    after = run(again, offset, 40)
    assert after and set(before) | set(after) == set(expected)
    assert sorted(set(before) & set(after)) == []  # closed minutes are not rewritten
    assert len(set(expected)) == len(expected)


def test_on_tansu_a_restart_without_metadata_writes_every_minute_exactly() -> None:
    """Tansu keeps no commit metadata: the writer restarted from its own held-back commit
    finds the closed minutes from the first record it replays — every minute written once,
    with the value of an uninterrupted run (one minute per report, the usual case)."""
    records = [[line(TAGS_A, M0 + i * 10_000, 0.5 * i), line(TAGS_B, M0 + i * 10_000, 2.0 + i)]
               for i in range(40)]

    def run(r: MinuteRollup, start: int, stop: int) -> list[str]:
        written = []
        for offset in range(start, stop):
            r.add("p", offset, records[offset])
            written += r.close("p", M0 + offset * 10_000, caught_up=False)
        return written

    expected = run(MinuteRollup(lateness_s=15), 0, 40)
    first = MinuteRollup(lateness_s=15, metadata_kept=False)
    before = run(first, 0, 25)
    offset, _dropped = first.commit("p", 25)
    assert offset < 25
    again = MinuteRollup(lateness_s=15, metadata_kept=False)
    again.assign("p", "", committed=True)  # what Tansu gives back
    after = run(again, offset, 40)
    assert before + after == expected
    # On Kafka the same missing metadata means an older writer's commit: the first minute
    # seen may be partial and is not written (the test below).
    kafka = MinuteRollup(lateness_s=15)
    kafka.assign("p", "", committed=True)
    assert len(run(kafka, offset, 40)) < len(after)


def test_on_tansu_a_report_spanning_minutes_loses_a_minute_never_writes_a_wrong_one() -> None:
    records = [[line(TAGS_A, M0 + i * 7_000 % 120_000, 0.1 * i),
                line(TAGS_B, M0 + i * 5_000, 3.0 + i)] for i in range(40)]

    def run(r: MinuteRollup, start: int, stop: int) -> list[str]:
        written = []
        for offset in range(start, stop):
            r.add("p", offset, records[offset])
            written += r.close("p", M0 + 10**7, caught_up=False)
        return written

    expected = set(run(MinuteRollup(lateness_s=15), 0, 40))
    first = MinuteRollup(lateness_s=15, metadata_kept=False)
    before = run(first, 0, 25)
    offset, _ = first.commit("p", 25)
    again = MinuteRollup(lateness_s=15, metadata_kept=False)
    again.assign("p", "", committed=True)
    after = run(again, offset, 40)
    assert set(before) | set(after) <= expected  # nothing written that is not exact


def test_a_commit_without_metadata_skips_the_first_minute_it_sees() -> None:
    r = MinuteRollup(lateness_s=0)
    r.assign("p", "", committed=True)  # committed before the writer computed minutes
    r.add("p", 5, [line(TAGS_A, M0 + 30_000, 1.0)])  # earlier readings of M0: committed
    r.add("p", 6, [line(TAGS_A, M0 + 60_000, 2.0), line(TAGS_A, M0 + 120_000, 3.0)])
    assert r.close("p", M0 + 10**6, caught_up=False) == [out(TAGS_A, M0 + 60_000, 2, 2, 2)]
    assert r.late == 1


def test_the_tiers_series_are_the_raw_points_series(registry: Registry) -> None:
    b = PointBuilder(registry)
    f = registry.facilities[0]
    ts = datetime.fromtimestamp(M0 / 1000, UTC).isoformat()
    raw = (f'{{"facility_id":"{f.id}","kind":"{f.kind.value}","seq":1,"received_at":"{ts}",'
           '"readings":[' + ",".join(
               f'{{"sensor":"{s.id}","metric":"{s.metric.value}","value":2,"unit":"x",'
               f'"ts":"{ts}"}}' for s in f.sensors) + "]}").encode()
    lines = b.readings_raw(raw)
    r = MinuteRollup(lateness_s=0)
    r.add("p", 0, lines)
    got = r.close("p", M0 + 10**6, caught_up=True)
    assert " " in f.district  # escaped in tags: "\ "
    assert [re.split(r"(?<!\\) ", g)[0].removeprefix("reading_1m") for g in got] == [
        re.split(r"(?<!\\) ", ln)[0].removeprefix("reading") for ln in lines]
    for g in got:
        head, fields, t = re.split(r"(?<!\\) ", g)
        assert {kv.split("=")[0] for kv in re.split(r"(?<!\\),", head)[1:]} == TAGS[
            Measurement.READING_1M]
        assert (fields, t) == ("max=2,mean=2,min=2", str(M0))


# ---------------------------------------------------------------------------- hourly tiers
H0 = M0 - M0 % HOUR_MS  # an hour's start (ms)
TAGS_C = ",district=d2,facility=F2,kind=drainage,metric=water_level,sensor=F2-L1"


def num(v: float) -> str:  # line protocol's float, integral ones without ".0"
    return repr(float(v)).removesuffix(".0")


def hourly(lines: list[str], measurement: str) -> list[str]:
    return [ln for ln in lines if ln.startswith(measurement + ",")]


def feed(r: MinuteRollup, part: object, minutes: range, values: dict[str, list[float]],
         offset: int = 0) -> list[str]:
    """Two readings a minute for each series (``values[tags][i]`` and 1 more), minute by
    minute, each minute closed by the next one's readings; everything written."""
    got: list[str] = []
    for i in minutes:
        lines = [line(tags, H0 + i * 60_000 + 5_000 * k, v[i] + k)
                 for tags, v in values.items() for k in (0, 1)]
        r.add(part, offset + i, lines)
        got += r.close(part, H0 + 10**9, caught_up=False)
    return got


def test_hours_are_the_minutes_aggregated_per_series_and_per_district() -> None:
    r = MinuteRollup(lateness_s=0, hours=HourRollup(refresh_minutes=60))
    values = {TAGS_A: [float(i % 7) for i in range(61)], TAGS_B: [10.0] * 61,
              TAGS_C: [float(-i) for i in range(61)]}
    got = feed(r, "0", range(61), values)  # minute 60 (the next hour's first) closes minute 59
    # Before its last minute is closed, the hour in progress was rewritten for series 1 and 2
    # at the first two minutes (one series a minute: refresh 60).
    early = hourly(got, Measurement.READING_1H)[:2]
    assert [g.split(" ")[0] for g in early] == [f"reading_1h{TAGS_B}", f"reading_1h{TAGS_C}"]
    got += r.close("0", H0 + 10**9, caught_up=True)  # the wall clock closes the next hour
    a = [v + 0.5 for v in values[TAGS_A][:60]]  # each minute's mean (readings v and v + 1)
    c = [v + 0.5 for v in values[TAGS_C][:60]]
    assert [g for g in hourly(got, Measurement.READING_1H) if g.endswith(f" {H0}")][-3:] == [
        f"reading_1h{TAGS_A} max=7,mean={num(sum(a) / 60)},min=0 {H0}",
        f"reading_1h{TAGS_B} max=11,mean=10.5,min=10 {H0}",
        f"reading_1h{TAGS_C} max=1,mean={num(sum(c) / 60)},min=-59 {H0}"]
    # Per district, kind, metric and partition: the series' hourly means averaged, min, max.
    assert hourly(got, Measurement.DISTRICT_1H)[:3] == [
        f"district_1h,district=d1,kind=drainage,metric=water_level,partition=0 max=7,"
        f"mean={num(sum(a) / 60)},min=0 {H0}",
        f"district_1h,district=d1,kind=drainage,metric=flow,partition=0 max=11,mean=10.5,"
        f"min=10 {H0}",
        f"district_1h,district=d2,kind=drainage,metric=water_level,partition=0 max=1,"
        f"mean={num(sum(c) / 60)},min=-59 {H0}"]
    assert r.hours is not None and r.hours.open_hours() == 0  # the next hour written too
    assert len([g for g in hourly(got, Measurement.READING_1H) if g.endswith(f" {H0}")]) == 5


def test_the_hour_in_progress_is_rewritten_a_share_of_the_series_at_a_time() -> None:
    r = MinuteRollup(lateness_s=0, hours=HourRollup(refresh_minutes=2))
    values = {TAGS_A: [1.0, 3.0, 5.0, 7.0], TAGS_B: [2.0] * 4}
    got = feed(r, "1", range(2), values)  # minute 0 closed (by minute 1's readings)
    # The first minute closed: one of the two series (its share), not the district.
    assert hourly(got, Measurement.READING_1H) == [f"reading_1h{TAGS_B} max=3,mean=2.5,min=2 {H0}"]
    assert hourly(got, Measurement.DISTRICT_1H) == []
    got = feed(r, "1", range(2, 3), values, offset=2)  # minute 1 closed: the other share
    assert hourly(got, Measurement.READING_1H) == [f"reading_1h{TAGS_A} max=4,mean=2.5,min=1 {H0}"]
    assert hourly(got, Measurement.DISTRICT_1H) == [
        f"district_1h,district=d1,kind=drainage,metric=water_level,partition=1 max=4,"
        f"mean=2.5,min=1 {H0}",
        f"district_1h,district=d1,kind=drainage,metric=flow,partition=1 max=3,mean=2.5,"
        f"min=2 {H0}"]


def test_an_hour_taken_over_midway_is_recomputed_from_the_stored_minutes() -> None:
    hours = HourRollup(refresh_minutes=1)
    r = MinuteRollup(lateness_s=0, hours=hours)
    # The previous owner closed minutes up to 12 of this hour (the commit's metadata).
    r.assign("p", str(H0 + 12 * 60_000), committed=True)
    values = {TAGS_A: [float(i) for i in range(62)]}
    got = feed(r, "p", range(13, 62), values)
    # Minutes 13–59 are written, but not the hour from memory: it lacks minutes 0–12.
    assert len([g for g in got if g.startswith("reading_1m,")]) == 48  # 13–60
    assert not [g for g in hourly(got, Measurement.READING_1H) if g.endswith(f" {H0}")]
    assert hours.take_recompute() == [Recompute("p", H0)]
    assert hours.take_recompute() == []  # once
    # The next hour is this owner's from its start: written from memory.
    assert hourly(got, Measurement.READING_1H)[-1] == (
        f"reading_1h{TAGS_A} max=61,mean=60.5,min=60 {H0 + HOUR_MS}")
    r.revoke("p")
    assert hours.open_hours() == 0 and "p" not in hours.parts


def test_an_hour_recomputed_takes_only_its_partitions_series() -> None:
    ids = [f"F{i}" for i in range(40)]
    parts = {fid: DefaultPartitioner()(fid.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) for fid in ids}
    assert len(set(parts.values())) == 4
    series = [{"name": "reading_1m", "tags": {"district": "d 1", "facility": fid,
                                                "kind": "drainage", "metric": "water_level",
                                                "sensor": f"{fid}-L1"},
               "columns": ["time", "mean", "min", "max"], "values": [[H0, 2.5, 1.0, 4.0]]}
              for fid in ids]
    series.append({"name": "reading_1m", "tags": {"facility": "F0"}, "columns": ["time"],
                   "values": []})  # nothing in it: skipped
    got = recompute_lines(series, Recompute(TopicPartition("lifeline.readings", 2), H0), 4)
    mine = [fid for fid in ids if parts[fid] == 2]
    assert hourly(got, Measurement.READING_1H) == [
        f"reading_1h,district=d\\ 1,facility={fid},kind=drainage,metric=water_level,"
        f"sensor={fid}-L1 max=4,mean=2.5,min=1 {H0}" for fid in mine]
    assert hourly(got, Measurement.DISTRICT_1H) == [
        f"district_1h,district=d\\ 1,kind=drainage,metric=water_level,partition=2 max=4,"
        f"mean=2.5,min=1 {H0}"]
    q = recompute_query(H0)
    assert f"time >= {H0}ms AND time < {H0 + HOUR_MS}ms GROUP BY *" in q
    assert 'FROM "long"."reading_1m"' in q


def test_the_hourly_tiers_carry_the_layouts_tags(registry: Registry) -> None:
    b = PointBuilder(registry)
    f = registry.facilities[0]
    ts = datetime.fromtimestamp(H0 / 1000, UTC).isoformat()
    raw = (f'{{"facility_id":"{f.id}","kind":"{f.kind.value}","seq":1,"received_at":"{ts}",'
           '"readings":[' + ",".join(
               f'{{"sensor":"{s.id}","metric":"{s.metric.value}","value":2,"unit":"x",'
               f'"ts":"{ts}"}}' for s in f.sensors) + "]}").encode()
    r = MinuteRollup(lateness_s=0, hours=HourRollup(refresh_minutes=1))
    r.add(TopicPartition("lifeline.readings", 3), 0, b.readings_raw(raw))
    got = r.close(TopicPartition("lifeline.readings", 3), H0 + 10**9, caught_up=True)
    seen = set()
    for g in got:
        head, _, _ = re.split(r"(?<!\\) ", g)
        measurement, *tags = re.split(r"(?<!\\),", head)
        assert {kv.split("=")[0] for kv in tags} == TAGS[measurement], g
        seen.add(measurement)
    assert seen == {Measurement.READING_1M, Measurement.READING_1H, Measurement.DISTRICT_1H}
    assert all(re.split(r"(?<!\\) ", g)[0].endswith(",partition=3") for g in hourly(
        got, Measurement.DISTRICT_1H))
