"""Derived signals over a sensor's recent samples, on event time.

:class:`Window`: time buckets, bounded whatever a gateway sends. (The raw sample list
it replaced — every sample kept, every signal rescanned on every call — lives on in
``tests/raw_samples.py`` as the reference the tests and the micro-benchmark compare with.)

Window semantics
----------------
Buckets are aligned to multiples of ``bucket_ms`` of epoch ms (bucket ``k`` holds event
times ``[k*bucket_ms, (k+1)*bucket_ms)``). A bucket holding one sample *is* that sample,
a ``(ts, value)`` pair; a bucket holding several keeps its newest sample ``(ts, value)``
plus, for the older ones, their count, sum, sum of squares, min, max, oldest time and sum of
times (the centroid). Adding a sample whose time equals a bucket's newest sample replaces
that sample, so a replayed or duplicated reading never counts twice; a multi-sample bucket
also remembers its older samples' times (up to ``SEEN_MAX``, 64), so their replays after a
restart are ignored too — only beyond that (a flood) does a replayed older sample count
again. ``trim(t)``
drops the buckets whose newest sample is at or before ``t``, and later ``add`` calls
ignore samples at or before ``t`` (they could only land outside every window).

With ``W = int(window_s * 1000)`` ms, a bucket is inside the window ``(now - W, now]``
when its newest sample's time is: with one sample per bucket this is exactly the
raw-sample window. Hence:

- SUM, MEAN, MIN, MAX, RMS over single-sample buckets (a sensor reporting at most once per
  bucket, in any order, with duplicates) are bit-for-bit those of the raw samples in the
  window (sums are kept exactly, as binary fixed-point integers, so they are correctly
  rounded like ``math.fsum``). With several samples per bucket (a flood, a sensor faster
  than declared, jitter across a bucket boundary) the only error is at the window's old
  edge: the oldest bucket counts whole or not at all, by its newest sample (at most one
  bucket's samples too many). A bucket with samples on both sides of ``now`` (only when
  asked about the past) is left out whole.
- TWA (time-weighted mean): the mean of the per-bucket means of the buckets in the window:
  each bucket is an equal slice of time, so a burst in one slice weighs as one slice; for a
  regular series it is the arithmetic mean. Known once the covered span (newest minus
  oldest sample in the window) is at least half the window. With several samples per
  bucket it is approximate in the same way at the old edge.
- RATE (robust, per ``rate_per_s`` seconds), over per-bucket points (centroid time, mean):
  known once the covered span is at least half the window and the window holds at least
  3 points. ``robust(points)`` is the slope between the medians (of time and of value,
  separately) of the oldest 3 and the newest 3 points (the groups overlap when there are
  4 or 5 points); with exactly 3 points it is the endpoint slope (not robust). The rate is
  the steeper (by magnitude) of ``robust`` over the whole window and ``robust`` over the
  points of its newest half ``(now - W/2, now]`` (``W/2`` in whole ms) when that half
  holds at least 5 points covering a quarter of the window: a rise sustained over the
  newest half shows at full slope, and a single outlier anywhere is at most one of three
  in every median group, so it moves each median only within the range of the other two
  (robust to one outlier from 4 points in the window on). Noise-free linear data gives
  the true slope, however the samples fall into buckets (centroids and means of points
  on a line are on it).
- VALUE: the newest sample at or before ``now``.

Cost: ``add`` and ``signal`` are amortised O(1) per reading for SUM, MEAN, RMS, TWA and
RATE: each window length asked about keeps running aggregates over its buckets (in memory
only, rebuilt lazily, never saved). MIN and MAX rescan the window's buckets when the
bucket holding the extreme leaves it. ``to_json`` is ``[bucket_ms, bucket, ...]`` with a
bucket as ``[ts, v]`` (one sample) or ``[ts, v, n, sum, sumsq, min, max, t0, toff, seen]``
(newest sample plus the ``n`` older ones; ``toff``: their times' sum, from the bucket's
start; ``seen``: their times, or null past ``SEEN_MAX``). Values are never non-finite (ingest refuses them).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any

from schemas.registry import Signal

Sample = tuple[int, float]  # (event time ms, value)


# --- the bucketed window ---------------------------------------------------------------

# An entry is (ts, v) for a single-sample bucket, else
# (ts, v, n, s, q, lo, hi, t0, toff): newest sample (ts, v) and the n >= 1 older samples'
# sum, sum of squares, min, max, oldest time and sum of (time - bucket start). Immutable:
# a change replaces the tuple.
Entry = tuple[Any, ...]
_NEWEST = itemgetter(0)
_MAX_AGGS = 16  # distinct window lengths with running aggregates (a registry has few)

# What a signal needs kept per window length.
_SUM, _SQ, _MEANS, _MIN, _MAX = 1, 2, 4, 8, 16
_VALUE, _SUM_S, _MEAN_S, _RMS_S, _MIN_S, _MAX_S, _TWA_S = (
    Signal.VALUE, Signal.SUM, Signal.MEAN, Signal.RMS, Signal.MIN, Signal.MAX, Signal.TWA)
_NEEDS = {Signal.SUM: _SUM, Signal.MEAN: _SUM, Signal.RMS: _SQ, Signal.TWA: _MEANS,
          Signal.MIN: _MIN, Signal.MAX: _MAX, Signal.RATE: 0}


class _Exact:
    """An exact running sum of floats: a binary fixed-point integer, ``num / 2**exp``.

    Adding and subtracting are exact, so the sum never drifts, and ``value`` is correctly
    rounded (Python's int true division is), the same float ``math.fsum`` gives."""

    __slots__ = ("exp", "ninf", "num", "pinf")

    def __init__(self) -> None:
        self.num = 0
        self.exp = 0
        self.pinf = self.ninf = 0  # infinite terms (only from a square or sum overflowing)

    def add(self, x: float) -> None:
        try:
            n, d = x.as_integer_ratio()
        except OverflowError:
            self._infinite(x, 1)
            return
        j = d.bit_length() - 1
        if j > self.exp:
            self.num <<= j - self.exp
            self.exp = j
        self.num += n << (self.exp - j)

    def sub(self, x: float) -> None:
        try:
            n, d = x.as_integer_ratio()
        except OverflowError:
            self._infinite(x, -1)
            return
        j = d.bit_length() - 1
        if j > self.exp:
            self.num <<= j - self.exp
            self.exp = j
        self.num -= n << (self.exp - j)

    def _infinite(self, x: float, sign: int) -> None:
        if x > 0:
            self.pinf += sign
        else:
            self.ninf += sign

    def value(self) -> float:
        if self.pinf or self.ninf:
            return math.nan if self.pinf and self.ninf else (math.inf if self.pinf else -math.inf)
        try:
            return self.num / (1 << self.exp)
        except OverflowError:
            return math.inf if self.num > 0 else -math.inf


def _oldest(e: Entry) -> int:
    return int(e[0] if len(e) == 2 else e[7])


def _lowest(e: Entry) -> float:
    return float(e[1] if len(e) == 2 else min(e[1], e[5]))


def _highest(e: Entry) -> float:
    return float(e[1] if len(e) == 2 else max(e[1], e[6]))


def _point(e: Entry, bucket_ms: int) -> tuple[float, float]:
    """(centroid time ms, mean value) of a bucket."""
    if len(e) == 2:
        return e[0], e[1]
    ts, v, n = e[0], e[1], e[2]
    start = ts // bucket_ms * bucket_ms
    return start + (e[8] + ts - start) / (n + 1), (e[3] + v) / (n + 1)


SEEN_MAX = 64  # older samples' times a bucket remembers, to recognise their replays


def _seen_with(seen: tuple[int, ...] | None, t: int) -> tuple[int, ...] | None:
    if seen is None or len(seen) >= SEEN_MAX:
        return None  # a flood: its replays are not recognised (bounded state first)
    return tuple(sorted((*seen, t)))


def _with(e: Entry, ts: int, v: float, bucket_ms: int) -> Entry:
    """Bucket ``e`` with the sample (ts, v) added (same ts as its newest: replaced; same ts
    as one of its older samples: already counted, ignored — a replay after a restart)."""
    if len(e) == 2:
        t1, v1 = e
        if ts == t1:
            return ts, v
        start = ts // bucket_ms * bucket_ms
        if ts > t1:
            return ts, v, 1, v1, v1 * v1, v1, v1, t1, t1 - start, (t1,)
        return t1, v1, 1, v, v * v, v, v, ts, ts - start, (ts,)
    t1, v1, n, s, q, lo, hi, t0, toff = e[:9]
    seen: tuple[int, ...] | None = e[9] if len(e) > 9 else None
    if ts == t1:
        return ts, v, n, s, q, lo, hi, t0, toff, seen
    if seen is not None and ts in seen:
        return e
    start = t1 // bucket_ms * bucket_ms
    if ts > t1:  # the newest becomes one of the older samples
        return (ts, v, n + 1, s + v1, q + v1 * v1, min(lo, v1), max(hi, v1), t0,
                toff + t1 - start, _seen_with(seen, t1))
    return (t1, v1, n + 1, s + v, q + v * v, min(lo, v), max(hi, v), min(t0, ts),
            toff + ts - start, _seen_with(seen, ts))


class _Agg:
    """Running aggregates over the buckets ``[lo, hi)`` inside one window length, as of
    ``now``; ``kinds`` says which are kept."""

    __slots__ = ("hi", "kinds", "lo", "m", "mn", "mn_dirty", "mx", "mx_dirty", "n", "now", "q",
                 "s", "w")

    def __init__(self, w: int, kinds: int) -> None:
        self.w = w
        self.kinds = kinds
        self.now: int | None = None  # None: to rebuild
        self.lo = self.hi = 0
        self.reset()

    def reset(self) -> None:
        self.n = 0  # samples in [lo, hi)
        self.s = _Exact()
        self.q = _Exact()
        self.m = _Exact()
        self.mn, self.mx = math.inf, -math.inf
        self.mn_dirty = self.mx_dirty = False

    def enter(self, e: Entry) -> None:
        k = self.kinds
        if len(e) == 2:
            v = e[1]
            self.n += 1
            if k & _SUM:
                self.s.add(v)
            if k & _SQ:
                self.q.add(v * v)
            if k & _MEANS:
                self.m.add(v)
            if k & _MIN and v < self.mn:
                self.mn = v
            if k & _MAX and v > self.mx:
                self.mx = v
            return
        v, c = e[1], e[2] + 1
        self.n += c
        if k & _SUM:
            self.s.add(e[3] + v)
        if k & _SQ:
            self.q.add(e[4] + v * v)
        if k & _MEANS:
            self.m.add((e[3] + v) / c)
        if k & _MIN:
            self.mn = min(self.mn, e[5], v)
        if k & _MAX:
            self.mx = max(self.mx, e[6], v)

    def leave(self, e: Entry, extremes: bool = True) -> None:
        k = self.kinds
        if len(e) == 2:
            v = e[1]
            self.n -= 1
            if k & _SUM:
                self.s.sub(v)
            if k & _SQ:
                self.q.sub(v * v)
            if k & _MEANS:
                self.m.sub(v)
        else:
            v, c = e[1], e[2] + 1
            self.n -= c
            if k & _SUM:
                self.s.sub(e[3] + v)
            if k & _SQ:
                self.q.sub(e[4] + v * v)
            if k & _MEANS:
                self.m.sub((e[3] + v) / c)
        if extremes:
            if k & _MIN and _lowest(e) <= self.mn:
                self.mn_dirty = True
            if k & _MAX and _highest(e) >= self.mx:
                self.mx_dirty = True

    def change(self, old: Entry, new: Entry) -> None:
        """Bucket ``old`` inside the range became ``new``."""
        self.leave(old, extremes=False)
        k = self.kinds
        self.enter(new)  # extremes: only ever lowers mn / raises mx
        if k & _MIN and _lowest(new) > (olo := _lowest(old)) and olo <= self.mn:
            self.mn_dirty = True  # a replaced newest sample was the minimum
        if k & _MAX and _highest(new) < (ohi := _highest(old)) and ohi >= self.mx:
            self.mx_dirty = True


class Window:
    """Time-bucketed samples of one sensor: bounded whatever a gateway sends.

    See the module docstring for the exact semantics."""

    __slots__ = ("_aggs", "_b", "_bms", "_floor")

    def __init__(self, bucket_ms: int) -> None:
        if bucket_ms < 1:
            raise ValueError(f"bucket_ms must be >= 1 (got {bucket_ms})")
        self._bms = int(bucket_ms)
        self._b: list[Entry] = []
        self._aggs: dict[int, _Agg] = {}
        self._floor: int | None = None  # last trim: samples at or before it are ignored

    @staticmethod
    def bucket_ms_for(interval_s: float, longest_window_s: float, max_buckets: int) -> int:
        """Bucket width: the sensor's report interval, coarser only if the longest window
        would need more than max_buckets buckets (then ceil(longest_window/max_buckets))."""
        b = max(1, round(interval_s * 1000))
        longest = math.ceil(longest_window_s * 1000)
        if max_buckets >= 1 and longest > b * max_buckets:
            b = -(-longest // max_buckets)
        return int(b)

    @property
    def bucket_ms(self) -> int:
        return self._bms

    def __len__(self) -> int:
        return len(self._b)

    def __repr__(self) -> str:
        return f"Window(bucket_ms={self._bms}, buckets={len(self._b)})"

    # -- changes -----------------------------------------------------------------------

    def add(self, ts: int, value: float) -> None:
        """Add a sample, in any order; same time as a bucket's newest sample: replaces it."""
        if self._floor is not None and ts <= self._floor:
            return
        b = self._bms
        bl = self._b
        k = ts // b
        i = len(bl) - 1
        if i < 0 or k > bl[i][0] // b:
            bl.append((ts, value))
            if self._aggs:
                self._inserted(i + 1)
            return
        if bl[i][0] // b != k:
            i = bisect_left(bl, k * b, key=_NEWEST)  # first bucket with newest >= k*b
            if bl[i][0] // b != k:
                bl.insert(i, (ts, value))
                if self._aggs:
                    self._inserted(i)
                return
        old = bl[i]
        new = bl[i] = _with(old, ts, value, b)
        for a in self._aggs.values():
            if a.lo <= i < a.hi:
                a.change(old, new)

    def _inserted(self, i: int) -> None:
        e = self._b[i]
        for a in self._aggs.values():
            if i <= a.lo:
                a.lo += 1
                a.hi += 1
            elif i < a.hi:
                a.enter(e)
                a.hi += 1

    def trim(self, keep_after: int) -> None:
        """Drop buckets whose newest sample is at or before ``keep_after`` (ms)."""
        self._floor = keep_after
        bl = self._b
        if not bl or bl[0][0] > keep_after:
            return
        j = 1 if len(bl) == 1 or bl[1][0] > keep_after else bisect_right(bl, keep_after,
                                                                         key=_NEWEST)
        for a in self._aggs.values():
            for e in bl[a.lo:min(a.hi, j)]:
                a.leave(e)
            a.lo = max(a.lo, j) - j
            a.hi = max(a.hi, j) - j
        del bl[:j]

    # -- signals -----------------------------------------------------------------------

    def _agg(self, w: int, need: int, now: int) -> _Agg:
        """The aggregates of window length ``w`` ms, moved to ``(now - w, now]``."""
        a = self._aggs.get(w)
        if a is None:
            if len(self._aggs) >= _MAX_AGGS:
                self._aggs.clear()
            a = self._aggs[w] = _Agg(w, need)
        elif need & ~a.kinds:
            a.kinds |= need
            a.now = None
        bl = self._b
        start = now - w
        lo, hi = a.lo, a.hi
        if a.now is None or lo == hi or abs(now - a.now) >= w:  # rebuild from scratch
            a.reset()
            lo = hi = bisect_right(bl, start, key=_NEWEST)
        n = len(bl)
        while hi < n and bl[hi][0] <= now:
            a.enter(bl[hi])
            hi += 1
        while hi > 0 and bl[hi - 1][0] > now:
            hi -= 1
            if hi >= lo:
                a.leave(bl[hi])
        lo = min(lo, hi)
        while lo < hi and bl[lo][0] <= start:
            a.leave(bl[lo])
            lo += 1
        while lo > 0 and bl[lo - 1][0] > start:
            lo -= 1
            a.enter(bl[lo])
        a.lo, a.hi, a.now = lo, hi, now
        return a

    def _extreme(self, a: _Agg, lowest: bool) -> float:
        if lowest and a.mn_dirty:
            a.mn = min(map(_lowest, self._b[a.lo:a.hi]))
            a.mn_dirty = False
        elif not lowest and a.mx_dirty:
            a.mx = max(map(_highest, self._b[a.lo:a.hi]))
            a.mx_dirty = False
        return a.mn if lowest else a.mx

    def signal(self, signal: Signal, window_s: float, rate_per_s: float,
               now: int) -> float | None:
        """The signal over ``(now - window_s, now]`` (event time, ms); None = not known."""
        bl = self._b
        if signal is _VALUE:
            if bl and bl[-1][0] <= now:
                return float(bl[-1][1])
            i = bisect_right(bl, now, key=_NEWEST)
            return float(bl[i - 1][1]) if i else None
        w = int(window_s * 1000)
        if w <= 0:
            return None
        a = self._agg(w, _NEEDS[signal], now)
        lo, hi = a.lo, a.hi
        if lo == hi:
            return None
        if signal is _SUM_S:
            return a.s.value()
        if signal is _MEAN_S:
            return a.s.value() / a.n
        if signal is _RMS_S:
            return math.sqrt(a.q.value() / a.n)
        if signal is _MIN_S:
            return self._extreme(a, True)
        if signal is _MAX_S:
            return self._extreme(a, False)
        t_new = bl[hi - 1][0]
        if t_new - _oldest(bl[lo]) < window_s * 500:
            return None  # less than half the window covered: not yet known
        if signal is _TWA_S:
            return a.m.value() / (hi - lo)
        if hi - lo < 3:  # RATE
            return None
        r = self._robust(lo, hi)
        h = bisect_right(bl, now - w // 2, lo, hi, key=_NEWEST)
        if hi - h >= 5 and t_new - _oldest(bl[h]) >= window_s * 250:
            r2 = self._robust(h, hi)
            if abs(r2) > abs(r):
                r = r2
        return r * 1000.0 * rate_per_s

    def _robust(self, lo: int, hi: int) -> float:
        """Slope (per ms) between the medians of the oldest and the newest 3 points of
        buckets ``[lo, hi)`` (endpoints when there are only 3)."""
        bl, b = self._b, self._bms
        if hi - lo < 4:
            e0, e1 = bl[lo], bl[hi - 1]
            (t0, v0) = e0 if len(e0) == 2 else _point(e0, b)
            (t1, v1) = e1 if len(e1) == 2 else _point(e1, b)
            return (v1 - v0) / (t1 - t0)
        o1, o2, o3, n1, n2, n3 = (e if len(e) == 2 else _point(e, b) for e in (
            bl[lo], bl[lo + 1], bl[lo + 2], bl[hi - 3], bl[hi - 2], bl[hi - 1]))
        return (_median3(n1[1], n2[1], n3[1]) - _median3(o1[1], o2[1], o3[1])) / (n2[0] - o2[0])

    # -- persistence -------------------------------------------------------------------

    def to_json(self) -> list[Any]:
        """``[bucket_ms, bucket, ...]``; a single-sample bucket is ``[ts, v]``."""
        out: list[Any] = [self._bms]
        out.extend(list(e) for e in self._b)
        return out

    @classmethod
    def from_json(cls, raw: list[Any], bucket_ms: int) -> Window:
        """Load ``to_json`` output (re-bucketed if ``bucket_ms`` changed) or the older form,
        a list of ``[ts, v]`` samples."""
        if not raw:
            return cls(bucket_ms)
        if isinstance(raw[0], list | tuple):
            return from_samples([(int(t), float(v)) for t, v in raw], bucket_ms)
        w = cls(bucket_ms)
        entries: list[Entry] = []
        for e in raw[1:]:
            if len(e) == 2:
                entries.append((int(e[0]), float(e[1])))
            elif len(e) in (9, 10):
                seen = tuple(int(t) for t in e[9]) if len(e) == 10 and e[9] is not None \
                    else None
                entries.append((int(e[0]), float(e[1]), int(e[2]), float(e[3]), float(e[4]),
                                float(e[5]), float(e[6]), int(e[7]), int(e[8]), seen))
        b = w._bms
        if int(raw[0]) == b and all(entries[i][0] // b < entries[i + 1][0] // b
                                    for i in range(len(entries) - 1)):
            w._b = entries
            return w
        saved = int(raw[0])
        for e in entries:
            w._merge(e, saved)
        return w

    def _merge(self, e: Entry, saved_ms: int) -> None:
        """Add a bucket saved with another width: whole, into the bucket of its newest."""
        self.add(e[0], e[1])
        if len(e) == 2:
            return
        b = self._bms
        i = bisect_left(self._b, e[0] // b * b, key=_NEWEST)
        old = self._b[i]
        n, s, q, lo, hi, t0 = e[2], e[3], e[4], e[5], e[6], e[7]
        tabs = e[8] + n * (e[0] // saved_ms * saved_ms)  # the older samples' time sum
        # Re-bucketed samples are not remembered one by one: their replays count again.
        if len(old) == 2:
            new: Entry = (old[0], old[1], n, s, q, lo, hi, t0, tabs - n * (old[0] // b * b),
                          None)
        else:
            new = (old[0], old[1], old[2] + n, old[3] + s, old[4] + q, min(old[5], lo),
                   max(old[6], hi), min(old[7], t0), old[8] + tabs - n * (old[0] // b * b),
                   None)
        self._b[i] = new
        for a in self._aggs.values():
            if a.lo <= i < a.hi:
                a.change(old, new)


def _median3(a: float, b: float, c: float) -> float:
    if a > b:
        a, b = b, a
    return a if c < a else (c if c < b else b)


def from_samples(samples: list[Sample], bucket_ms: int) -> Window:
    """A window holding old saved state: a list of (ts, value) samples."""
    w = Window(bucket_ms)
    for t, v in samples:
        w.add(int(t), float(v))
    return w
