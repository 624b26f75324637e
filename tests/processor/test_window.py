"""The bucketed window (services/processor/engine/signals.Window) against naive references."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.registry import Signal
from services.processor.engine.signals import Window, from_samples
from tests.support import raw_samples

Sample = tuple[int, float]
BASE = 1_700_000_040_000  # a multiple of 60 s, epoch ms
AGGREGATES = (Signal.SUM, Signal.MEAN, Signal.MIN, Signal.MAX, Signal.RMS, Signal.TWA)
DERIVED = (*AGGREGATES, Signal.RATE)


# --- naive references over raw samples ---------------------------------------------------

def _robust(points: list[Sample]) -> float:
    if len(points) < 4:
        (t0, v0), (t1, v1) = points[0], points[-1]
        return (v1 - v0) / (t1 - t0)
    old = sorted(v for _, v in points[:3])[1]
    new = sorted(v for _, v in points[-3:])[1]
    return (new - old) / (points[-2][0] - points[1][0])


def reference(samples: list[Sample], signal: Signal, window_s: float, rate_per_s: float,
              now: int) -> float | None:
    """The module docstring's semantics, straight from raw samples (one per bucket)."""
    w = int(window_s * 1000)
    win = sorted((t, v) for t, v in samples if now - w < t <= now)
    if not win:
        return None
    values = [v for _, v in win]
    span = win[-1][0] - win[0][0]
    if signal is Signal.SUM:
        return math.fsum(values)
    if signal is Signal.MEAN:
        return math.fsum(values) / len(values)
    if signal is Signal.MIN:
        return min(values)
    if signal is Signal.MAX:
        return max(values)
    if signal is Signal.RMS:
        return math.sqrt(math.fsum(v * v for v in values) / len(values))
    if span < window_s * 500:
        return None
    if signal is Signal.TWA:
        return math.fsum(values) / len(values)
    if len(win) < 3:
        return None
    r = _robust(win)
    half = [(t, v) for t, v in win if t > now - w // 2]
    if len(half) >= 5 and half[-1][0] - half[0][0] >= window_s * 250:
        r2 = _robust(half)
        if abs(r2) > abs(r):
            r = r2
    return r * 1000.0 * rate_per_s


def bucket_reference(w: Window, signal: Signal, window_s: float, now: int) -> float | None:
    """The aggregates recomputed from the saved buckets (any number of samples each)."""
    start = now - int(window_s * 1000)
    inside = [e for e in w.to_json()[1:] if start < e[0] <= now]
    if not inside:
        return None
    sums = [e[1] if len(e) == 2 else e[3] + e[1] for e in inside]
    counts = [1 if len(e) == 2 else e[2] + 1 for e in inside]
    if signal is Signal.SUM:
        return math.fsum(sums)
    if signal is Signal.MEAN:
        return math.fsum(sums) / sum(counts)
    if signal is Signal.RMS:
        sq = [e[1] * e[1] if len(e) == 2 else e[4] + e[1] * e[1] for e in inside]
        return math.sqrt(math.fsum(sq) / sum(counts))
    if signal is Signal.MIN:
        return min(e[1] if len(e) == 2 else min(e[1], e[5]) for e in inside)
    if signal is Signal.MAX:
        return max(e[1] if len(e) == 2 else max(e[1], e[6]) for e in inside)
    oldest = inside[0][0] if len(inside[0]) == 2 else inside[0][7]
    if inside[-1][0] - oldest < window_s * 500:
        return None
    return math.fsum(s / c for s, c in zip(sums, counts, strict=True)) / len(inside)  # TWA


class Both:
    """A Window and the raw sample list fed the same way the engine feeds them."""

    def __init__(self, bucket_ms: int, keep_ms: int) -> None:
        self.w = Window(bucket_ms)
        self.raw: list[Sample] = []
        self.keep_ms = keep_ms
        self.newest: int | None = None
        self.floor: int | None = None

    def add(self, ts: int, v: float) -> bool:
        """Add; trim on an in-order reading. True if in order (the engine evaluates then)."""
        self.w.add(ts, v)
        if self.floor is None or ts > self.floor:  # the window ignores samples behind a trim
            raw_samples.insert(self.raw, ts, v)
        if self.newest is not None and ts < self.newest:
            return False
        self.newest = ts
        self.floor = ts - self.keep_ms
        self.w.trim(self.floor)
        raw_samples.trim(self.raw, self.floor)
        return True


def check(both: Both, windows: list[float], now: int) -> None:
    for window_s in windows:
        for sig in DERIVED:
            got = both.w.signal(sig, window_s, 60.0, now)
            want = reference(both.raw, sig, window_s, 60.0, now)
            if sig is Signal.RATE and got is not None and want is not None:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (sig, window_s, now)
            else:
                assert got == want, (sig, window_s, now, both.raw)


# --- exactness: one sample per bucket ----------------------------------------------------

VALUES = st.one_of(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, 1.0, -1.0, 0.1, 2.5, 1e-300, 3.3e5]))


@st.composite
def regular_series(draw: Any) -> tuple[int, list[float], list[tuple[int, float]]]:
    """A sensor reporting at most once per bucket (with gaps), arriving in any order, with
    duplicates (same time, maybe another value: the last one counts)."""
    bucket_ms = draw(st.sampled_from([1000, 60_000, 7_000]))
    slots = draw(st.lists(st.integers(0, 80), min_size=1, max_size=50, unique=True))
    base = BASE // bucket_ms * bucket_ms  # buckets are aligned to epoch ms
    samples = [(base + s * bucket_ms + draw(st.integers(0, bucket_ms - 1)), draw(VALUES))
               for s in sorted(slots)]
    arrivals = list(samples)
    for _ in range(draw(st.integers(0, 10))):  # duplicates / replays / corrections
        t, v = draw(st.sampled_from(samples))
        arrivals.insert(draw(st.integers(0, len(arrivals))), (t, draw(st.one_of(st.just(v),
                                                                                 VALUES))))
    for _ in range(draw(st.integers(0, 8))):  # local reordering (late readings)
        i = draw(st.integers(0, len(arrivals) - 1))
        j = min(len(arrivals) - 1, i + draw(st.integers(1, 6)))
        arrivals[i], arrivals[j] = arrivals[j], arrivals[i]
    windows = sorted(set(draw(st.lists(st.integers(1, 60), min_size=1, max_size=3))))
    return bucket_ms, [n * bucket_ms / 1000 for n in windows], arrivals


@settings(max_examples=400, deadline=None)
@given(regular_series(), st.lists(st.integers(-90, 90), max_size=8))
def test_single_sample_buckets_equal_the_raw_samples(series: Any, probes: list[int]) -> None:
    bucket_ms, windows, arrivals = series
    both = Both(bucket_ms, int(max(windows) * 1000))
    for ts, v in arrivals:
        if both.add(ts, v):
            check(both, windows, ts)
        assert all(len(e) == 2 for e in both.w.to_json()[1:])
    assert both.newest is not None
    for p in probes:  # in the past and the future, in any order (windows move both ways)
        check(both, windows, both.newest + p * bucket_ms // 7)


def test_exact_with_ill_conditioned_values() -> None:
    """Huge and tiny values cancelling: running sums must not drift."""
    both = Both(60_000, 600_000)
    values = [1e16, 1.0, -1e16, 3.0, 1e-8, 2.5e15, -2.5e15, 7.0, 0.1, 0.2] * 5
    for i, v in enumerate(values):
        ts = BASE + i * 60_000
        both.add(ts, v)
        check(both, [300.0, 600.0], ts)


# --- incremental caches equal a recomputation, any number of samples per bucket ----------

@st.composite
def operations(draw: Any) -> tuple[int, list[tuple[str, int, float]]]:
    bucket_ms = draw(st.sampled_from([1000, 10_000]))
    ops: list[tuple[str, int, float]] = []
    for _ in range(draw(st.integers(1, 80))):
        kind = draw(st.sampled_from(["add", "add", "add", "flood", "trim", "eval"]))
        t = BASE + draw(st.integers(0, 40 * bucket_ms))
        ops.append((kind, t, draw(VALUES)))
    return bucket_ms, ops


@settings(max_examples=300, deadline=None)
@given(operations(), st.lists(st.sampled_from([3, 10, 25]), min_size=1, max_size=2, unique=True))
def test_incremental_aggregates_equal_recomputed_buckets(case: Any, buckets: list[int]) -> None:
    bucket_ms, ops = case
    w = Window(bucket_ms)
    windows = [n * bucket_ms / 1000 for n in buckets]
    for kind, t, v in ops:
        if kind == "add":
            w.add(t, v)
        elif kind == "flood":
            for j in range(5):
                w.add(t + j * 97 % bucket_ms, v + j)
        elif kind == "trim":
            w.trim(t - 30 * bucket_ms)
        fresh = Window.from_json(json.loads(json.dumps(w.to_json())), bucket_ms)
        for window_s in windows:
            for sig in DERIVED:
                got = w.signal(sig, window_s, 60.0, t)
                assert got == fresh.signal(sig, window_s, 60.0, t), (sig, window_s, t)
                if sig is not Signal.RATE:
                    assert got == bucket_reference(w, sig, window_s, t), (sig, window_s, t)


# --- robust rate ------------------------------------------------------------------------

def rates(values: list[float], window_s: float = 600.0, interval_s: float = 60.0) -> list[
        float | None]:
    w = Window(Window.bucket_ms_for(interval_s, window_s, 10_000))
    out = []
    for i, v in enumerate(values):
        ts = BASE + int(i * interval_s * 1000)
        w.add(ts, v)
        w.trim(ts - int(window_s * 1000))
        out.append(w.signal(Signal.RATE, window_s, 60.0, ts))
    return out


def test_one_spike_does_not_trip_a_rate_of_rise() -> None:
    values = [1.0] * 21 + [3.5] + [1.0] * 15  # 20 min flat, one 3.5 m reading, flat again
    got = rates(values)
    assert got[:5] == [None] * 5  # less than half the window covered
    assert all(r is not None and r < 0.05 for r in got[5:]), got
    raw: list[Sample] = []  # the old endpoint rate does trip
    raw_samples.insert(raw, BASE + 21 * 60_000, 3.5)
    raw_samples.insert(raw, BASE + 12 * 60_000, 1.0)
    old = raw_samples.compute(raw, Signal.RATE, 600.0, 60.0, BASE + 21 * 60_000)
    assert old is not None and old > 0.05


def noise(i: int) -> float:
    return ((i * 7919) % 11 - 5) / 1000  # deterministic, within ±5 mm


def test_one_spike_in_noise_moves_the_rate_only_a_little() -> None:
    clean = [1.0 + noise(i) for i in range(40)]
    for at in (3, 6, 21, 39):  # early, as the window fills, mid-run, newest
        spiky = list(clean)
        spiky[at] = 3.5
        for a, b in zip(rates(clean), rates(spiky), strict=True):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert b < 0.05 and abs(a - b) < 0.02, (at, a, b)


def test_a_real_rise_shows_within_five_readings() -> None:
    values = [1.0] * 21 + [1.0 + 0.06 * k for k in range(1, 6)]  # flat, then 0.06 m/min
    got = rates(values)
    assert got[-1] is not None and got[-1] >= 0.05
    assert got[-1] == pytest.approx(0.06)
    falling = rates([2.0] * 21 + [2.0 - 0.06 * k for k in range(1, 6)])
    assert falling[-1] is not None and falling[-1] <= -0.05
    noisy = rates([1.0 + noise(i) for i in range(21)] +
                  [1.0 + 0.06 * k + noise(21 + k) for k in range(1, 6)])
    assert noisy[-1] is not None and noisy[-1] >= 0.05


@pytest.mark.parametrize(("slope", "interval_s", "window_s", "bucket_ms"), [
    (0.06, 60.0, 600.0, 60_000), (-0.013, 30.0, 3600.0, 30_000), (2.5, 1.0, 60.0, 1000),
    (0.04, 10.0, 600.0, 60_000),  # six samples per bucket: centroids and means, still a line
    (0.5, 300.0, 900.0, 300_000),  # three points: endpoints
])
def test_noise_free_line_gives_its_slope(slope: float, interval_s: float, window_s: float,
                                         bucket_ms: int) -> None:
    w = Window(bucket_ms)
    known = 0
    for i in range(int(3 * window_s / interval_s)):
        ts = BASE + int(i * interval_s * 1000)
        w.add(ts, 5.0 + slope * (ts - BASE) / 60_000)
        w.trim(ts - int(window_s * 1000))
        r = w.signal(Signal.RATE, window_s, 60.0, ts)
        if r is not None:
            known += 1
            assert r == pytest.approx(slope, rel=1e-9)
    assert known > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1_800_000), min_size=3, max_size=120, unique=True),
       st.floats(-1.0, 1.0).filter(lambda x: abs(x) > 1e-3))
def test_irregular_line_gives_its_slope(offsets: list[int], slope: float) -> None:
    """Bucket points are (centroid, mean): on the line however the samples fall."""
    w = Window(60_000)
    for off in offsets:
        w.add(BASE + off, 5.0 + slope * off / 60_000)
    now = BASE + max(offsets)
    r = w.signal(Signal.RATE, 1800.0, 60.0, now)
    if r is not None:
        assert r == pytest.approx(slope, rel=1e-6)


# --- TWA ----------------------------------------------------------------------------------

def test_twa_weighs_a_burst_as_one_slice_of_time() -> None:
    w = Window(60_000)
    for i in range(10):
        w.add(BASE + i * 60_000, 0.0)
    for j in range(100):  # a burst at 10 inside minute 5
        w.add(BASE + 5 * 60_000 + 1 + j, 10.0)
    now = BASE + 9 * 60_000
    assert w.signal(Signal.TWA, 600.0, 60.0, now) == pytest.approx(1000 / 101 / 10)  # 1 slice
    assert w.signal(Signal.MEAN, 600.0, 60.0, now) == pytest.approx(1000.0 / 110)
    assert w.signal(Signal.TWA, 1200.0, 60.0, now) is None  # 9 of 20 minutes covered


# --- bounded under a flood ----------------------------------------------------------------

def test_a_flood_keeps_a_handful_of_buckets() -> None:
    """1,000 messages x 256 readings with distinct timestamps, 12 h window."""
    window_s = 12 * 3600.0
    bucket_ms = Window.bucket_ms_for(60.0, window_s, 1000)
    w = Window(bucket_ms)
    keep = int(window_s * 1000)
    total = 0.0
    hi = -math.inf
    for m in range(1000):
        for r in range(256):
            ts = BASE + m * 256 + r  # 256,000 ms: a little over 4 minutes
            v = 1.0 + (r % 17) / 100
            total += v
            hi = max(hi, v)
            w.add(ts, v)
            w.trim(ts - keep)
        assert len(w) <= math.ceil(keep / bucket_ms) + 2
        assert w.signal(Signal.MAX, window_s, 60.0, ts) == hi
    assert len(w) <= 6
    assert w.signal(Signal.SUM, window_s, 60.0, ts) == pytest.approx(total, rel=1e-9)
    assert w.signal(Signal.MEAN, window_s, 60.0, ts) == pytest.approx(total / 256_000, rel=1e-9)
    assert len(json.dumps(w.to_json())) < 1000


def test_bucket_width() -> None:
    assert Window.bucket_ms_for(60.0, 600.0, 1000) == 60_000
    assert Window.bucket_ms_for(1.0, 12 * 3600.0, 1000) == 43_200  # coarser: 1,000 buckets
    assert Window.bucket_ms_for(1.0, 1000.5, 1000) == 1001
    assert Window.bucket_ms_for(0.0001, 1.0, 1000) == 1


def test_kept_buckets_never_exceed_the_longest_window() -> None:
    w = Window(60_000)
    keep = 600_000
    for i in range(5000):
        ts = BASE + i * 1_000 + (i * 37) % 900  # faster than declared, jittered
        w.add(ts, float(i))
        w.add(ts - 50_000 - i % 3_000_000, 1.0)  # late readings, some long after a trim
        w.trim(ts - keep)
        assert len(w) <= math.ceil(keep / 60_000) + 2


# --- persistence --------------------------------------------------------------------------

def fed(bucket_ms: int, n: int, step_ms: int) -> Window:
    w = Window(bucket_ms)
    for i in range(n):
        w.add(BASE + i * step_ms, math.sin(i) * 3 + 2)
    return w


@pytest.mark.parametrize("step_ms", [60_000, 7_000])  # one sample per bucket; several
def test_json_round_trip_gives_identical_signals(step_ms: int) -> None:
    w = fed(60_000, 200, step_ms)
    now = BASE + 199 * step_ms
    back = Window.from_json(json.loads(json.dumps(w.to_json())), 60_000)
    assert len(back) == len(w) and back.to_json() == w.to_json()
    for window_s in (600.0, 3600.0):
        for sig in (*DERIVED, Signal.VALUE):
            assert back.signal(sig, window_s, 60.0, now) == w.signal(sig, window_s, 60.0, now)
    # then both continue the same way
    for i in range(200, 260):
        for x in (w, back):
            x.add(BASE + i * step_ms, float(i % 5))
            x.trim(BASE + i * step_ms - 3_600_000)
        for sig in DERIVED:
            now = BASE + i * step_ms
            assert back.signal(sig, 600.0, 60.0, now) == w.signal(sig, 600.0, 60.0, now)


def test_single_sample_bucket_serialises_as_a_pair() -> None:
    w = fed(60_000, 100, 60_000)
    pairs = [[BASE + i * 60_000, math.sin(i) * 3 + 2] for i in range(100)]
    assert w.to_json()[1:] == pairs
    assert len(json.dumps(w.to_json())) <= len(json.dumps(pairs)) + 10


def test_rebucketing_when_the_width_changes() -> None:
    w = fed(60_000, 120, 20_000)  # three samples per bucket
    raw = json.loads(json.dumps(w.to_json()))
    now = BASE + 119 * 20_000
    for width in (120_000, 30_000, 60_001):
        back = Window.from_json(raw, width)
        assert back.bucket_ms == width
        assert back.signal(Signal.SUM, 7200.0, 60.0, now) == pytest.approx(
            w.signal(Signal.SUM, 7200.0, 60.0, now), rel=1e-12)
        assert back.signal(Signal.MAX, 7200.0, 60.0, now) == w.signal(Signal.MAX, 7200.0, 60.0,
                                                                      now)
        assert back.signal(Signal.MEAN, 600.0, 60.0, now) == pytest.approx(
            w.signal(Signal.MEAN, 600.0, 60.0, now), abs=1.0)  # old edge: approximate
    assert Window.from_json([], 60_000).to_json() == [60_000]


def test_from_samples_migrates_old_state() -> None:
    raw: list[Sample] = []
    for i in range(300):
        raw_samples.insert(raw, BASE + i * 60_000 + (i * 13) % 1000, math.cos(i))
    old_json = [[t, v] for t, v in raw]  # what SensorState saved so far
    now = raw[-1][0]
    for w in (from_samples(raw, 60_000), Window.from_json(old_json, 60_000)):
        assert len(w) == 300
        for sig in (Signal.SUM, Signal.MEAN, Signal.MIN, Signal.MAX, Signal.RMS):
            assert w.signal(sig, 3600.0, 60.0, now) == raw_samples.compute(raw, sig, 3600.0, 60.0,
                                                                       now)
    coarse = from_samples(raw, 600_000)  # registry now wants coarser buckets
    assert len(coarse) == 30 or len(coarse) == 31
    assert coarse.signal(Signal.SUM, 86400.0, 60.0, now) == pytest.approx(
        math.fsum(v for _, v in raw), rel=1e-9)


# --- duplicates and trim ----------------------------------------------------------------

def test_duplicates_replace() -> None:
    w = Window(60_000)
    w.add(BASE, 1.0)
    w.add(BASE, 2.0)  # a correction/replay of a single sample
    assert len(w) == 1 and w.signal(Signal.SUM, 600.0, 60.0, BASE) == 2.0
    w.add(BASE + 10, 3.0)
    w.add(BASE + 10, 3.0)  # replay of a bucket's newest sample
    w.add(BASE + 10, 4.0)
    assert w.signal(Signal.SUM, 600.0, 60.0, BASE + 10) == 6.0
    assert w.signal(Signal.MAX, 600.0, 60.0, BASE + 10) == 4.0
    w.add(BASE + 10, 0.5)  # the replaced newest was the maximum
    assert w.signal(Signal.MAX, 600.0, 60.0, BASE + 10) == 2.0
    assert w.signal(Signal.MIN, 600.0, 60.0, BASE + 10) == 0.5
    assert w.signal(Signal.MEAN, 600.0, 60.0, BASE + 10) == 1.25
    assert len(w) == 1


def test_trim_drops_buckets_by_their_newest_sample() -> None:
    w = Window(60_000)
    for i in range(10):
        w.add(BASE + i * 60_000, float(i))
    w.add(BASE + 2 * 60_000 + 30_000, 2.5)
    w.trim(BASE + 2 * 60_000)  # bucket 2's newest is later: kept
    assert len(w) == 8
    w.trim(BASE + 2 * 60_000 + 30_000)
    assert len(w) == 7
    w.add(BASE + 60_000, 99.0)  # behind the trim: ignored
    w.add(BASE + 2 * 60_000 + 30_000, 99.0)
    assert len(w) == 7
    now = BASE + 9 * 60_000
    assert w.signal(Signal.MAX, 3600.0, 60.0, now) == 9.0
    assert w.signal(Signal.MIN, 3600.0, 60.0, now) == 3.0
    assert w.signal(Signal.VALUE, 600.0, 60.0, now) == 9.0
    assert w.signal(Signal.VALUE, 600.0, 60.0, BASE + 5 * 60_000 + 1) == 5.0
    assert w.signal(Signal.SUM, 600.0, 60.0, BASE) is None
    w.trim(now)
    assert len(w) == 0 and w.signal(Signal.MEAN, 600.0, 60.0, now) is None


def test_old_compute_knows_twa() -> None:
    raw = [(BASE + i * 60_000, float(i)) for i in range(10)]
    assert raw_samples.compute(raw, Signal.TWA, 600.0, 60.0, raw[-1][0]) == 4.5
    assert raw_samples.compute(raw, Signal.TWA, 1800.0, 60.0, raw[-1][0]) is None


def test_replaying_a_faster_than_declared_sensor_counts_nothing_twice() -> None:
    """A gauge reporting every 5 s into 300 s buckets, restored from a checkpoint and fed
    again from an older offset (at-least-once after a crash): the sums are unchanged."""
    from services.processor.engine.signals import Window

    samples = [(1_700_000_000_000 + i * 5_000, 0.5) for i in range(60)]
    w = Window(300_000)
    for t, v in samples[:40]:
        w.add(t, v)
    saved = Window.from_json(w.to_json(), 300_000)
    for t, v in samples[20:]:  # 20 replayed, 20 new
        saved.add(t, v)
    now = samples[-1][0]
    assert saved.signal(Signal.SUM, 3600, 60, now) == pytest.approx(30.0)
    fresh = Window(300_000)
    for t, v in samples:
        fresh.add(t, v)
    assert fresh.signal(Signal.SUM, 3600, 60, now) == pytest.approx(30.0)
