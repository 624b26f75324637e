"""The checkpoint pace and the bound it really keeps (services/processor/checkpoints.py),
and the handlers without Faust (services/processor/handlers.py)."""

from __future__ import annotations

import json
import math
import zlib
from datetime import timedelta
from typing import Any

import pytest

from schemas.codec import READING_BATCH
from schemas.reading import Reading, ReadingBatch
from services.core.health import Counters, Health
from services.processor.checkpoints import CheckpointPacer, UnsavedProgress, bound_warning
from services.processor.engine import AlarmEngine, FacilityState
from services.processor.handlers import COUNTERS, Handlers
from tests.support.engine_helpers import T0, Feeder, lv, make_registry, sensor

LEVELS = [lv("blue", 1.8, 1.7), lv("yellow", 2.25, 2.15), lv("red", 2.95, 2.85)]



def allowed(pacer: CheckpointPacer, seconds: float, facilities: int, interval_s: float = 60,
            calls_per_s: int = 2000) -> int:
    n = 0
    for i in range(int(seconds * calls_per_s)):
        n += pacer.allow(i / calls_per_s, facilities, interval_s)
    return n


def test_the_pace_follows_the_need_between_floor_and_ceiling() -> None:
    # 1,000 facilities need 33/s: the floor (150/s, plus the first second's burst).
    assert allowed(CheckpointPacer(150, 600), 10, 1_000) == pytest.approx(150 + 150 * 10, abs=2)
    # 16,000 facilities at checkpoint_interval_s 60 need 16,000 / 30 s = 533/s.
    pacer = CheckpointPacer(150, 600)
    assert allowed(pacer, 10, 16_000) == pytest.approx(16_000 / 30 * 11, abs=2)
    assert pacer.rate == pytest.approx(16_000 / 30)
    # 40,000 would need 1,333/s: held at the ceiling.
    assert allowed(CheckpointPacer(150, 600), 10, 40_000) == pytest.approx(600 * 11, abs=2)


def test_a_fixed_pace_stays_fixed() -> None:
    """LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S: floor = ceiling, whatever the need."""
    pacer = CheckpointPacer(40, 40)
    assert allowed(pacer, 5, 100_000) == pytest.approx(40 + 40 * 5, abs=2)
    assert CheckpointPacer(150, 0.0001).floor == 0.0001  # a floor never above the ceiling


def test_unsaved_progress_is_the_largest_of_the_last_minute() -> None:
    fs = FacilityState()
    fs.first_ts, fs.latest_ts = 1_000_000, 1_090_000
    assert UnsavedProgress.of(fs, 0) == 90_000  # never saved: since the first report
    assert UnsavedProgress.of(fs, 1_060_000) == 30_000
    u = UnsavedProgress()
    u.observe(100.2, 30_000)
    u.observe(100.7, 90_000)
    u.observe(130.0, 45_000)
    assert u.bound_ms(130.5) == 90_000
    assert u.bound_ms(159.9) == 90_000  # second 100 is inside the minute (99, 159]
    assert u.bound_ms(160.0) == 45_000  # ... and forgotten a minute later
    assert u.bound_ms(191.0) == 0


def test_the_warning_names_both_figures() -> None:
    assert bound_warning(120.0, 60, 150, 600) is None  # exactly twice: not yet
    text = bound_warning(121.4, 60, 150, 600)
    assert text is not None
    assert "up to 121 s of event time" in text and "checkpoint_interval_s (60 s)" in text


class Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        self.sent.append((key, value))


def handlers_for(registry: Any, floor: float, ceiling: float) -> tuple[Handlers, dict[str, str],
                                                                      Topic]:
    table: dict[str, str] = {}
    alarms = Topic()
    h = Handlers(AlarmEngine(registry), table, Health("processor", Counters(*COUNTERS)),
                 alarms=alarms, dlq=Topic(), context=Topic(),
                 pacer=CheckpointPacer(floor, ceiling), behind=lambda _p: False)
    return h, table, alarms


def batch(value: float, t_s: int, seq: int) -> bytes:
    ts = T0 + timedelta(seconds=t_s)
    return READING_BATCH.encode(ReadingBatch(
        facility_id="F-1", kind="drainage", seq=seq, received_at=ts,
        readings=[Reading(sensor="L", metric="water_level", value=value, unit="m", ts=ts)]))


async def test_handlers_without_faust_emit_what_the_engine_decides() -> None:
    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)))
    reference = Feeder(registry)
    values = [0.8, 1.9, 1.95, 3.0, 2.9, 0.5, 0.6]
    reference.series("L", values)
    h, table, alarms = handlers_for(registry, 150, 600)
    for i, v in enumerate(values):
        await h.reading(b"F-1", batch(v, 60 * i, i + 1), f"test@{i}", 0, i)
    assert [json.loads(v)["event_id"] for _, v in alarms.sent] == [
        e.event_id for e in reference.events]
    assert json.loads(table["F-1"])["rules"]["L|value-upper"][4] is None  # saved the clear


async def test_a_starved_pace_reports_the_bound_that_really_holds() -> None:
    """No budget: every periodic checkpoint is deferred; the raise saves everything since
    the first save — 20 minutes of event time, reported and warned about."""
    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             policy={"checkpoint_interval_s": 60})
    h, _, alarms = handlers_for(registry, 0.0001, 0.0001)  # one checkpoint, the first
    values = [1.0] * 10 + [3.0] + [1.0] * 5
    for i, v in enumerate(values):
        await h.reading(b"F-1", batch(v, 120 * i, i + 1), f"test@{i}", 0, i)
    assert len(alarms.sent) == 2  # raised at 1200 s, cleared at 1320 s
    counts = h.counters.snapshot()
    assert counts["state_saves"] == 3 and counts["checkpoints_deferred"] == 13
    assert h.bound_s() == 1200.0  # the raise covered 0 s → 1200 s
    h.check_bound()
    warning = h.health.warnings()["checkpoints"]
    assert "up to 1200 s of event time" in warning and "(60 s)" in warning
    h.check_bound(now=10**9)  # a minute without checkpoints: nothing left to warn about
    assert "checkpoints" not in h.health.warnings()


async def test_a_pace_that_keeps_up_keeps_the_interval() -> None:
    """Reports every 10 s: each periodic checkpoint covers the facility's own interval
    (50-100 % of checkpoint_interval_s) rounded up to the next report; no warning."""
    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             policy={"checkpoint_interval_s": 60})
    h, _, _ = handlers_for(registry, 150, 600)
    for i in range(40):
        await h.reading(b"F-1", batch(1.0, 10 * i, i + 1), f"test@{i}", 0, i)
    own_ms = int(60_000 * (0.5 + (zlib.crc32(b"F-1") % 1000) / 2000))
    assert h.bound_s() == math.ceil(own_ms / 10_000) * 10
    h.check_bound()
    assert "checkpoints" not in h.health.warnings()
    assert h.counters.get("checkpoints_deferred") == 0


async def test_the_latency_budget_of_the_processor() -> None:
    """Each event's wait (ingest's receipt → evaluation), its evaluation and each alarm's
    produce → ack are timed (issue 16): a broker that acknowledges after 20 ms shows it."""
    import asyncio

    class AckingTopic(Topic):
        async def send(self, *, key: bytes | None, value: bytes) -> Any:  # type: ignore[override]
            self.sent.append((key, value))
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.02, fut.set_result, None)
            return fut

    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)))
    alarms = AckingTopic()
    h = Handlers(AlarmEngine(registry), {}, Health("processor", Counters(*COUNTERS)),
                 alarms=alarms, dlq=Topic(), context=Topic(),
                 pacer=CheckpointPacer(150, 600), behind=lambda _p: False)
    values = [0.8, 1.9, 1.95, 3.0, 2.9, 0.5, 0.6]
    for i, v in enumerate(values):
        await h.reading(b"F-1", batch(v, 60 * i, i + 1), f"test@{i}", 0, i)
    await asyncio.sleep(0.1)
    snap = h.counters.snapshot()
    assert snap["latency.processor.evaluate.n"] == len(values)
    assert snap["latency.processor.wait.n"] == len(values)
    # received_at is years ago in this test: the wait says so (in ms)
    assert snap["latency.processor.wait.p50_ms"] > 1e6
    assert snap["latency.processor.alarm_produce.n"] == len(alarms.sent) > 0
    assert 20.0 <= snap["latency.processor.alarm_produce.p50_ms"] <= 100.0


async def test_a_pack_is_evaluated_batch_by_batch_and_a_bad_line_goes_alone() -> None:
    """A ``lifeline.readings`` record packed by ingest (one batch per line, issue 16): the
    same alarms as the batches one by one; a line that is no batch is dead-lettered with
    its own bytes and ``#<line>`` in its source, and the lines beside it are evaluated."""
    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)))
    values = [0.8, 1.9, 1.95, 3.0, 2.9, 0.5, 0.6]
    one, _, alarms_one = handlers_for(registry, 150, 600)
    for i, v in enumerate(values):
        await one.reading(b"F-1", batch(v, 60 * i, i + 1), f"test@{i}", 0, i)
    packed, _, alarms_packed = handlers_for(registry, 150, 600)
    lines = [batch(v, 60 * i, i + 1) for i, v in enumerate(values)]
    await packed.reading(b"F-1", READING_BATCH.pack([*lines[:3], b'{"not": "a batch"}']),
                         "kafka:lifeline.readings[0]@7", 0, 7)
    await packed.reading(b"F-1", READING_BATCH.pack(lines[3:]), "kafka:lifeline.readings[0]@8",
                         0, 8)
    assert alarms_packed.sent == alarms_one.sent and alarms_one.sent
    assert packed.position[0] == 8
    [(key, raw)] = packed.dlq.sent  # type: ignore[attr-defined]
    dl = json.loads(raw)
    assert key == b"F-1"
    assert dl["source"] == "kafka:lifeline.readings[0]@7#3" and dl["reason"] == "undecodable_event"
    counts = packed.counters.snapshot()
    assert counts["processed_batches"] == 7 and counts["processed_packs"] == 2
    assert counts["rejected"] == 1


async def test_a_record_of_blank_lines_is_dead_lettered_not_dropped() -> None:
    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)))
    h, _, _ = handlers_for(registry, 150, 600)
    await h.reading(b"F-1", b"\n\n", "kafka:lifeline.readings[0]@3", 0, 3)
    [(_, raw)] = h.dlq.sent  # type: ignore[attr-defined]
    assert json.loads(raw)["source"] == "kafka:lifeline.readings[0]@3"
    assert h.counters.snapshot()["rejected"] == 1


def test_checkpoints_wait_while_the_brokers_backlog_is_high() -> None:
    """The producer's buffer of table writes at 50 or more: every periodic checkpoint
    waits (Faust would stop the stream at 100), tokens are kept for when it drains."""
    backlog = [0]
    pacer = CheckpointPacer(150, 600, backlog=lambda: backlog[0])
    assert pacer.allow(0.0, 10, 60)
    backlog[0] = 50
    assert not any(pacer.allow(0.001 * i, 10, 60) for i in range(1, 100))
    assert pacer.waited == 99
    backlog[0] = 49
    assert pacer.allow(0.2, 10, 60)  # the bucket was not spent while waiting


async def test_a_backlogged_broker_defers_checkpoints_but_never_a_transition() -> None:
    """While the producer's buffer is backlogged no periodic checkpoint is written; the
    raise and the clear are saved at once all the same, and the bound says what the
    wait cost."""
    registry = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             policy={"checkpoint_interval_s": 60})
    table: dict[str, str] = {}
    alarms = Topic()
    h = Handlers(AlarmEngine(registry), table, Health("processor", Counters(*COUNTERS)),
                 alarms=alarms, dlq=Topic(), context=Topic(),
                 pacer=CheckpointPacer(150, 600, backlog=lambda: 80), behind=lambda _p: False)
    values = [1.0] * 10 + [3.0] + [1.0] * 5
    for i, v in enumerate(values):
        await h.reading(b"F-1", batch(v, 120 * i, i + 1), f"test@{i}", 0, i)
    assert len(alarms.sent) == 2
    counts = h.counters.snapshot()
    assert counts["state_saves"] == 2  # the raise and the clear, nothing periodic
    assert counts["checkpoints_deferred"] == 14 and h.pacer.waited == 14
    assert json.loads(table["F-1"])["rules"]["L|value-upper"][4] is None  # the clear saved
    assert h.bound_s() == 1200.0
