"""Hostile and broken telemetry: each reject in the DLQ with its reason, valid messages
published between them all stored, ingest never restarts."""

from __future__ import annotations

import hashlib
import json

from services.core import topics
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_count, iso_ms, now_ms, report, topic_records, wait_for

FAC = "DR-LW-001"
TOPIC = f"lifeline/drainage/{FAC}/telemetry"
L1 = f"{FAC}-L1"


def _msg(ts_ms: int, seq: object = 1, **reading: object) -> bytes:
    r = {"sensor": L1, "metric": "water_level", "value": 1.0, "unit": "m", **reading}
    return json.dumps({"ts": iso_ms(ts_ms), "seq": seq, "readings": [r]}).encode()


def test_bad_payloads_are_dead_lettered_and_valid_ones_stored(pipeline: Pipeline,
                                                              publisher: Publisher) -> None:
    stack = pipeline.stack
    ingest = pipeline.services["ingest"]
    pid = ingest.proc.pid if ingest.proc else None
    t0 = now_ms() - 60_000
    nonce = str(t0).encode()  # makes every bad payload unique to this run
    bad: list[tuple[str, str, bytes]] = [
        ("not_json", TOPIC, b"{not json " + nonce),
        ("not_utf8", TOPIC, b"\xff\xfe" + nonce),
        ("schema", TOPIC, _msg(t0, value="1.5", note=None)[:-1] + b', "x": 1}'),  # wrong type
        ("schema", TOPIC, _msg(t0, value=1.0).replace(b"1.0", b"NaN")),
        ("schema", TOPIC, _msg(t0, value=1.0).replace(b"1.0", b"Infinity")),
        ("schema", TOPIC, json.dumps({"seq": 1, "n": t0}).encode()),  # missing fields
        ("unknown_facility", "lifeline/drainage/DR-NOPE-9/telemetry", _msg(t0)),
        ("unknown_sensor", TOPIC, _msg(t0 + 1, sensor="DR-LW-001-ZZ")),
        ("bad_unit", TOPIC, _msg(t0 + 2, unit="kg")),
        ("metric_mismatch", TOPIC, _msg(t0 + 3, metric="flow")),
        ("oversize", TOPIC, _msg(t0) + b" " * 70_000),
        ("timestamp_future", TOPIC, _msg(t0 + 86_400_000)),
        ("timestamp_past", TOPIC, _msg(t0 - 30 * 86_400_000)),
        ("kind_mismatch", f"lifeline/bridge/{FAC}/telemetry", _msg(t0 + 4)),
        ("bad_topic", f"lifeline/volcano/{FAC}/telemetry", _msg(t0 + 5)),
    ]
    good = 0
    for i, (_, topic, payload) in enumerate(bad):
        publisher.publish(topic, payload)
        # a valid report between every two bad ones
        publisher.publish(TOPIC, report(100 + i, t0 + 10_000 + i * 1000,
                                        [(L1, "water_level", 1.0 + i / 100, "m")]))
        good += 1
    assert publisher.flush(20)

    where = f"facility='{FAC}' AND time >= {t0 + 10_000}ms"
    wait_for(lambda: influx_count(stack, where) == good, what=f"{good} valid reports stored")

    wanted = {hashlib.sha256(p).hexdigest(): reason for reason, _, p in bad}

    def dead_letters() -> dict[str, str]:
        return {d["payload_sha256"]: d["reason"] for d in topic_records(stack, topics.READINGS_DLQ)
                if d["payload_sha256"] in wanted}

    found = wait_for(lambda: (d := dead_letters()) and len(d) == len(wanted) and d,
                     what="every bad payload in the DLQ")
    assert found == wanted
    for d in topic_records(stack, topics.READINGS_DLQ):
        if d["payload_sha256"] in wanted:
            assert d["detail"] and d["source"].startswith("mqtt:lifeline/")
            if d["reason"] == "oversize":
                assert d["payload_truncated"] and d["payload_size"] > 70_000

    assert ingest.proc is not None and ingest.proc.pid == pid and ingest.running
    counters = ingest.counters()
    assert counters["rejected.schema"] >= 4 and counters["rejected.oversize"] >= 1
    assert "ingest.rejected" in ingest.tail(200_000)  # a log line naming the source


def test_partially_bad_report_keeps_its_good_readings(pipeline: Pipeline,
                                                      publisher: Publisher) -> None:
    stack = pipeline.stack
    t0 = now_ms() - 50_000
    payload = report(7, t0, [(L1, "water_level", 1.1, "m"),
                             ("DR-LW-001-XX", "water_level", 1.2, "m"),
                             (f"{FAC}-Q1", "flow", 80.0, "L/s")])
    publisher.publish(TOPIC, payload)
    wait_for(lambda: influx_count(stack, f"facility='{FAC}' AND time = {t0}ms") == 2,
             what="the two good readings")
    sha = hashlib.sha256(payload).hexdigest()
    [dl] = wait_for(lambda: [d for d in topic_records(stack, topics.READINGS_DLQ)
                             if d["payload_sha256"] == sha], what="dead letter")
    assert [(p["reason"], p["reading_index"]) for p in dl["problems"]] == [("unknown_sensor", 1)]
