"""What the writer does with one batch of records (services/writer/handlers.py), without
Faust or a broker: a sink that keeps what it is given, dead letters collected."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.codec import ALARM_EVENT, DEAD_LETTER, ONCALL_RECORD
from schemas.deadletter import DeadLetter, RejectReason
from schemas.oncall import OnCallRecord, RecordType
from services.core import topics
from services.core.health import Counters, Health
from services.writer.config import WriterSettings
from services.writer.handlers import ROLLUP_CHUNK_POINTS, Handlers, Record
from services.writer.points import PointBuilder
from tests.support.engine_helpers import lv, make_registry, sensor
from tests.support.oncall_helpers import alarm


class KeepingSink:
    name = "keeping"

    def __init__(self) -> None:
        self.writes: list[tuple[list[str], bool, str]] = []

    async def write(self, lines: list[str], *, long_term: bool = False,
                    precision: str = "ms") -> None:
        self.writes.append((list(lines), long_term, precision))

    async def close(self) -> None:
        pass


def handlers() -> tuple[Handlers, KeepingSink, list[DeadLetter], Counters]:
    registry = make_registry(sensor("lvl", "water_level", {"levels": [lv("red", 2.0, 1.9)]}))
    counters = Counters()
    sink = KeepingSink()
    dead: list[DeadLetter] = []

    async def send(_key: bytes | None, value: bytes) -> None:
        dead.append(DEAD_LETTER.decode(value))

    h = Handlers(PointBuilder(registry), sink, counters, Health("writer", counters),
                 WriterSettings(), send)
    return h, sink, dead, counters


async def test_an_alarm_batch_is_one_long_term_write_and_garbage_is_dead_lettered() -> None:
    h, sink, dead, counters = handlers()
    ev = alarm(started=datetime(2026, 7, 1, 8, 0, tzinfo=UTC))
    await h.store([Record(b"\xffnot json", topics.ALARMS, 2, 7, b"F-1"),
                   Record(ALARM_EVENT.encode(ev), topics.ALARMS, 2, 8, b"F-1")],
                  topics.ALARMS, h.alarm_lines, "processed_alarm_events", long_term=True)
    assert sink.writes == [([h.points.alarm(ev), h.points.alarm_state(ev)], True, "ms")]
    assert [(d.source, d.reason, d.service) for d in dead] == [
        ("kafka:lifeline.alarms[2]@7", RejectReason.UNDECODABLE_EVENT, "writer")]
    assert counters.get("processed_alarm_events") == 2 and counters.get("rejected") == 1
    assert counters.get("stored_points") == 2 and counters.get("written_batches") == 1


async def test_an_acknowledgement_is_stored_in_the_audit_trail_and_the_alarm_state() -> None:
    h, sink, dead, counters = handlers()
    ack = OnCallRecord(record_id="5f0c2a9e-1b7d-4c3e-9a51-0d2f6b8e4c17",
                       type=RecordType.ACKNOWLEDGED, ts=datetime(2026, 7, 1, 8, 5, tzinfo=UTC),
                       alarm_id="a-1", facility_id="F-1", sensor="lvl", person="ann",
                       detail="on my way")
    await h.store_oncall([Record(ONCALL_RECORD.encode(ack), topics.ONCALL, 0, 3)])
    audit, state = h.oncall_lines(ONCALL_RECORD.encode(ack))
    assert state is not None
    assert sink.writes == [([audit], True, "ns"), ([state], True, "ms")]
    assert dead == [] and counters.get("processed_oncall_records") == 1


async def test_a_minute_of_many_series_is_stored_in_requests_of_bounded_size() -> None:
    """Issue 16: one request of a minute's 125,001 aggregates timed out beside the readings
    writes and was sent again whole; now at most ROLLUP_CHUNK_POINTS a request, in order."""
    h, sink, _, counters = handlers()
    lines = [f"reading_1m,sensor=S{i} max=1,mean=1,min=1 60000" for i in range(125_001)]
    await h.store_rollup(lines)
    sizes = [len(w[0]) for w in sink.writes]
    assert max(sizes) <= ROLLUP_CHUNK_POINTS and len(sizes) == -(-125_001 // ROLLUP_CHUNK_POINTS)
    assert [ln for w in sink.writes for ln in w[0]] == lines  # each once, in order
    assert all(w[1] for w in sink.writes)  # the long retention policy
    assert counters.get("stored_points") == 125_001
