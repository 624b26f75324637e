"""Hostile input on the real stack: a flooding gateway cannot starve the others."""

from __future__ import annotations

import base64
import json

from services.core import topics
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import now_ms, report, topic_records, wait_for

FLOOD, CALM = "SQ-OF-001", "SQ-LW-001"


def test_flooding_gateway_is_limited_and_others_get_through(pipeline: Pipeline,
                                                            publisher: Publisher) -> None:
    ingest = pipeline.services["ingest"]
    before = ingest.counters()
    t0 = now_ms() - 10 * 60_000
    flood = f"lifeline/sewage/{FLOOD}/telemetry"
    calm = f"lifeline/sewage/{CALM}/telemetry"
    sent_calm = 0
    for i in range(3000):  # ~3,000 messages in well under a second: 100x the allowed rate
        publisher.publish(flood, report(10_000 + i, t0 + i,
                                        [(f"{FLOOD}-Q1", "flow", 500.0, "L/s")]))
        if i % 75 == 0:
            sent_calm += 1
            publisher.publish(calm, report(sent_calm, t0 + i,
                                           [(f"{CALM}-Q1", "flow", 400.0, "L/s")]))
    assert publisher.flush(60)

    def settled() -> dict[str, int]:
        c = ingest.counters()
        return c if c.get("received", 0) - before.get("received", 0) >= 3000 + sent_calm else {}

    after = wait_for(settled, timeout=60, what="ingest received everything")
    limited = after.get("rate_limited", 0) - before.get("rate_limited", 0)
    # Burst 1,000 and 20 per second: about 2,000 of the flood refused, none of the calm one.
    assert 1500 <= limited <= 2000, limited
    records = topic_records(pipeline.stack, topics.READINGS)
    calm_seqs = {r["seq"] for r in records if r["facility_id"] == CALM}
    assert set(range(1, sent_calm + 1)) <= calm_seqs
    dlq = [r for r in topic_records(pipeline.stack, topics.READINGS_DLQ)
           if r["reason"] == "rate_limited" and r["facility_id"] == FLOOD]
    # Every limited message is kept, with its bytes, where it can be replayed (issue 14:
    # nothing acknowledged into nothing).
    assert len(dlq) == limited
    assert "over its rate" in dlq[0]["detail"]
    assert json.loads(base64.b64decode(dlq[0]["payload_b64"]))["seq"] >= 10_000
    code, body = ingest.health()
    assert code == 200, body
