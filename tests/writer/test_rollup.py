"""The writer's 1-minute tier (services/writer/rollup.py): mean/min/max per series and
minute as the continuous query wrote them, closed by event time, late readings within the
lateness folded in, commits held back to the oldest open minute, and a replay from the
commit writing the same values."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from schemas.registry import Registry
from schemas.storage import TAGS, Measurement
from services.writer.points import PointBuilder
from services.writer.rollup import MinuteRollup

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
