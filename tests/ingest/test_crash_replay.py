"""Abort and replay ingest at its crash point ``ingest.after_produce`` (services/core/
crash.py): report k's batch is on the broker (acknowledged by Kafka), its MQTT message
not yet acknowledged (PUBACK) — the moment a crash decides what is replayed.

Ingest subscribes with QoS 1 in a persistent session (``clean_session=False``, client id
= its username) and acknowledges manually, in arrival order, only after Kafka took every
record of a message (services/ingest/inflight.py). So after the crash Mosquitto keeps
report k as in flight and redelivers it (and queues what is published meanwhile); the
restarted ingest produces it again. Reports 1..k-1 are published one at a time, each only
once ingest has acknowledged the previous one, so none of them is owed a PUBACK at the
crash, and k+1..N are published while ingest is down: at-least-once allows exactly one
duplicate here, report k's batch, and nothing else may differ from an uninterrupted run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from schemas.registry import load_registry
from services.core import topics
from services.core.crash import CRASH_EXIT, ENV
from services.ingest.config import IngestSettings
from services.ingest.validate import Validator
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import now_ms, report, topic_records, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

FACILITY = "DU-KG-001"  # a drainage facility of the example registry (others may
# publish for it too: the records are told apart by this test's own event times)
TOPIC = f"lifeline/drainage/{FACILITY}/telemetry"
N, K = 12, 5  # reports; ingest crashes after producing the K-th


def payload(seq: int, t0: int) -> bytes:
    return report(seq, t0 + seq * 1000, [(f"{FACILITY}-P1", "ponding_depth", 2.0 + seq, "cm"),
                                         (f"{FACILITY}-R1", "rainfall", seq / 10, "mm")])


def counters(ingest: ServiceProcess) -> dict[str, Any]:
    code, body = ingest.health()
    return dict(body["counters"]) if code == 200 and body else {}


def acked(ingest: ServiceProcess, n: int) -> dict[str, Any]:
    """Ingest's counters once it has acknowledged ``n`` messages and owes nothing, else
    ``{}``."""
    c = counters(ingest)
    return c if c.get("acked") == n and c.get("pending_acks") == 0 else {}


def epoch(ts: str) -> int:
    """Epoch ms of a contract timestamp (RFC 3339)."""
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def batch(record: dict[str, Any]) -> str:
    """A readings record without its arrival time (a redelivery arrives anew)."""
    return json.dumps({k: v for k, v in record.items() if k != "received_at"}, sort_keys=True)


def test_crash_after_produce_replays_exactly_the_unacknowledged_report(
        pipeline: Pipeline, publisher: Publisher, registry_file: Path) -> None:
    stack, ingest = pipeline.stack, pipeline.services["ingest"]
    started = now_ms()
    t0 = started - 30_000
    sent = {seq: payload(seq, t0) for seq in range(1, N + 1)}
    # What an uninterrupted run produces: ingest's own validation of each report.
    s = IngestSettings()
    validator = Validator(load_registry(registry_file), max_payload_bytes=s.max_payload_bytes,
                          max_future_s=s.max_future_s, max_past_s=s.max_past_s)
    expected = {}
    for seq, body in sent.items():
        out = validator.validate(TOPIC, body, datetime.now(UTC))
        assert out.batch_json is not None and out.dead_letter is None
        expected[seq] = batch(json.loads(out.batch_json))

    ingest.stop()  # the session pipeline's ingest: its session stays, queueing
    log_from = ingest.log.stat().st_size
    ingest.env[ENV] = f"ingest.after_produce:{K}"
    try:
        ingest.start()
        wait_for(lambda: ingest.health()[0] == 200, 60, 0.05, "armed ingest connected")
        for seq in range(1, K):
            publisher.publish(TOPIC, sent[seq])
            c = wait_for(partial(acked, ingest, seq), 30, 0.02, f"report {seq} acknowledged")
            assert c["accepted_reports"] == seq, c  # no other report reached this ingest
        publisher.publish(TOPIC, sent[K])
        assert ingest.proc is not None
        assert ingest.proc.wait(30) == CRASH_EXIT
        hit = [json.loads(line) for line in
               ingest.log.read_bytes()[log_from:].decode(errors="replace").splitlines()
               if '"crash_point.hit"' in line]
        assert hit == [{"event": "crash_point.hit", "point": "ingest.after_produce", "pass": K}]
        for seq in range(K + 1, N + 1):  # while ingest is down: queued in its session
            publisher.publish(TOPIC, sent[seq])
        assert publisher.flush(30)

        del ingest.env[ENV]
        ingest.start()
        # The restarted ingest receives report K again (redelivered) and K+1..N once.
        try:
            c = wait_for(lambda: acked(ingest, N - K + 1), 30, 0.05, "the replay acknowledged")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; ingest's counters: {counters(ingest)}") from None
        assert (c["received"], c["accepted_reports"]) == (N - K + 1, N - K + 1), c
    finally:
        if ingest.env.pop(ENV, None) is not None and ingest.running:
            ingest.stop()  # failed before the crash: still armed, it would crash later
        if not ingest.running:
            ingest.start()
        pipeline.wait_ready("ingest")

    def ours(r: dict[str, Any]) -> bool:  # this test's reports: event times from t0 on
        return r.get("facility_id") == FACILITY and epoch(r["readings"][0]["ts"]) > t0

    got = [r for r in topic_records(stack, topics.READINGS) if ours(r)]
    assert sorted(batch(r) for r in got) == sorted([*expected.values(), expected[K]])
    twice = [r["received_at"] for r in got if r["seq"] == K]
    assert len(set(twice)) == 2  # two arrivals, not one record sent twice
    assert [d for d in topic_records(stack, topics.READINGS_DLQ)
            if d.get("facility_id") == FACILITY and epoch(d["received_at"]) >= started] == []
