"""The per-stage latency budget (services/core/latency.py): percentiles within a bucket
(25 %), a sliding window that forgets, gauges on the counters."""

from __future__ import annotations

import random

from services.core.health import Counters
from services.core.latency import SLOTS, Budget, Stage


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_percentiles_within_a_bucket() -> None:
    clock = Clock()
    s = Stage(60, clock)
    rng = random.Random(7)
    values = [rng.uniform(0.001, 0.2) for _ in range(5000)]
    for v in values:
        s.observe(v)
    f = s.figures()
    ordered = sorted(values)
    assert f["n"] == 5000
    for key, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
        true_ms = 1000 * ordered[int(q * len(ordered)) - 1]
        assert true_ms <= f[key] <= true_ms * 1.25 + 1e-9, (key, true_ms, f[key])
    assert f["max_ms"] == round(1000 * max(values), 2)


def test_window_forgets_old_slots() -> None:
    clock = Clock()
    s = Stage(60, clock)
    s.observe(5.0)
    clock.t += 30
    s.observe(0.01)
    assert s.figures()["n"] == 2 and s.figures()["max_ms"] == 5000
    clock.t += 60 - 60 / SLOTS + 1  # the first slot has left the window, the second not
    f = s.figures()
    assert f["n"] == 1 and f["max_ms"] == 10.0
    clock.t += 120
    assert s.figures() == {"n": 0, "p50_ms": 0, "p99_ms": 0, "max_ms": 0}


def test_negative_and_nan_count_as_zero() -> None:
    s = Stage(60, Clock())
    s.observe(-3.0)
    s.observe(float("nan"))
    assert s.figures()["n"] == 2 and s.figures()["max_ms"] == 0


def test_budget_gauges_on_counters() -> None:
    counters = Counters()
    budget = Budget(counters)
    budget.stage("ingest.produce").observe(0.004)
    snap = counters.snapshot()
    assert snap["latency.ingest.produce.n"] == 1
    assert 4.0 <= snap["latency.ingest.produce.p99_ms"] <= 5.0
    assert budget.stage("ingest.produce") is budget.stage("ingest.produce")
