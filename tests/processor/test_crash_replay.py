"""Abort and replay the processor at its crash point ``processor.after_emit``
(services/core/crash.py): event k's alarm events are on the broker (acknowledged), its
source offset and its state (the ``alarm_state`` changelog record) not yet committed.

The processor commits a readings offset only after flushing its producer (Faust), so once
its lag is 0 everything before it — alarms and changelog — is on the broker. Events
1..k-1 are processed and committed before event k is sent; the crash then leaves event k
uncommitted with its alarms produced and the facility's saved state that of event k-1.
The restarted processor restores that state, Kafka redelivers event k, and the engine
(deterministic ids) produces event k's alarms again. At-least-once allows exactly that:
the alarm topic holds, for the facility, the uninterrupted run's events — the same ids,
records and order — with event k's present twice and nothing else twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.alarm import AlarmEvent
from schemas.codec import ALARM_EVENT, READING_BATCH
from schemas.reading import Reading, ReadingBatch
from schemas.registry import load_registry
from services.core import topics
from services.core.crash import CRASH_EXIT, ENV
from services.processor.engine import AlarmEngine, FacilityState
from services.stack.services import ServiceProcess
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import topic_records

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FACILITY = "TEST-CR-1"  # this test's own facility (tests/support/pipeline.py)
SENSOR = f"{FACILITY}-L1"
# 5 minutes apart in event time (no flapping); each value after the first raises,
# escalates or clears: one alarm event per report.
VALUES = [1.0, 2.2, 1.0, 2.7, 3.2, 1.0, 2.2, 2.8, 1.0, 3.5, 1.0]
K = 5  # the processor crashes after producing the alarms of the K-th report (3.2: red)


def batches(t0: datetime) -> list[ReadingBatch]:
    """The reports as the processor reads them (through the codec: millisecond times)."""
    now = datetime.now(UTC)
    out = []
    for n, v in enumerate(VALUES, start=1):
        b = ReadingBatch(facility_id=FACILITY, kind="drainage", seq=n, received_at=now,
                         readings=[Reading(sensor=SENSOR, metric="water_level", value=v,
                                           unit="m", ts=t0 + timedelta(minutes=5 * n))])
        out.append(READING_BATCH.decode(READING_BATCH.encode(b)))
    return out


def reference(registry_path: Any, sent: list[ReadingBatch]) -> list[list[AlarmEvent]]:
    """Each report's alarm events in an uninterrupted run: the engine in-process."""
    engine, fs = AlarmEngine(load_registry(registry_path)), FacilityState()
    return [engine.evaluate(b, fs).events for b in sent]


def produce(pipeline: Pipeline, sent: list[ReadingBatch]) -> None:
    async def run() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{pipeline.stack.ports.kafka}")
        await p.start()
        try:
            for b in sent:
                await p.send_and_wait(topics.READINGS, READING_BATCH.encode(b),
                                      key=FACILITY.encode())
        finally:
            await p.stop()

    asyncio.run(run())


def caught_up(proc: ServiceProcess, batches_done: int, what: str,
              timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the processor has processed ``batches_done`` events and committed every
    offset (lag 0: its producer was flushed before the commit); its counters. At least:
    after the crash Kafka may also redeliver an event whose state was already saved, which
    the engine recognises (older than the facility's newest reading) and emits nothing for
    — the alarm topic below is what must be exact."""
    deadline = time.monotonic() + timeout
    c: dict[str, Any] = {}
    while time.monotonic() < deadline:
        c = proc.counters()
        if c.get("processed_batches", 0) >= batches_done and c.get("lag") == 0:
            return c
        time.sleep(0.1)
    keys = ("processed_batches", "lag", "assigned_partitions", "state_saves")
    raise AssertionError(f"{what} not reached in {timeout}s: {({k: c.get(k) for k in keys})}")


def test_crash_after_emit_replays_exactly_the_uncommitted_event(
        pipeline: Pipeline, registry_file: Any) -> None:
    proc = pipeline.services["processor"]
    sent = batches(datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2))
    per_report = reference(registry_file, sent)
    assert per_report[0] == [] and all(len(e) == 1 for e in per_report[1:])
    expected = [e for events in per_report for e in events]
    crashed = {e.event_id for e in per_report[K - 1]}
    passes = sum(1 for events in per_report[:K] if events)  # alarm-emitting reports

    proc.stop()  # the session pipeline's processor (it commits on the way out)
    log_from = proc.log.stat().st_size
    proc.env[ENV] = f"processor.after_emit:{passes}"
    try:
        proc.start()
        pipeline.wait_ready("processor")
        produce(pipeline, sent[:K - 1])
        caught_up(proc, K - 1, "reports 1..K-1 committed")
        produce(pipeline, sent[K - 1:K])
        assert proc.proc is not None
        assert proc.proc.wait(30) == CRASH_EXIT
        hit = [json.loads(line) for line in
               proc.log.read_bytes()[log_from:].decode(errors="replace").splitlines()
               if '"crash_point.hit"' in line]
        assert hit == [{"event": "crash_point.hit", "point": "processor.after_emit",
                        "pass": passes}]

        del proc.env[ENV]
        proc.start()
        pipeline.wait_ready("processor")
        produce(pipeline, sent[K:])
        # Report K redelivered (uncommitted) and K+1..N once; nothing else.
        caught_up(proc, len(sent) - K + 1, "the replay")
    finally:
        if proc.env.pop(ENV, None) is not None and proc.running:
            # Failed before the crash: the running processor is still armed and would
            # crash on a later test's alarms (found in CI: the next two tests failed so).
            proc.stop()
        if not proc.running:
            proc.start()
        pipeline.wait_ready("processor")

    got = [r for r in topic_records(pipeline.stack, topics.ALARMS)
           if r["facility_id"] == FACILITY]
    ids = [r["event_id"] for r in got]
    first: dict[str, dict[str, Any]] = {}
    for r in got:
        first.setdefault(r["event_id"], r)
    def what(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["event"], r["level"], r["rule"], r["ts"], r["alarm_id"]

    assert [what(r) for r in first.values()] == [
        what(json.loads(ALARM_EVENT.encode(e))) for e in expected]
    assert list(first) == [e.event_id for e in expected]  # same events, same order
    assert list(first.values()) == [json.loads(ALARM_EVENT.encode(e)) for e in expected]
    assert {i: n for i, n in Counter(ids).items() if n > 1} == dict.fromkeys(crashed, 2)
    twice = [r for r in got if r["event_id"] in crashed]
    assert twice[0] == twice[1]  # the replay produced the identical record
