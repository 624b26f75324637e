"""Internal topics on the real stack (issue 15, docs/decisions/0011 "Internal topics"):
garbage on ``lifeline.alarms`` and ``lifeline.acks`` is dead-lettered by the notifier and
the writer with its bytes and reason, and the next valid alarm is still paged and stored."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from services.core import topics
from services.stack.manager import Stack
from services.stack.services import get_json
from tests.notifier.test_notifier import (  # noqa: F401 — the module's notifier fixture
    Notifier,
    notifier,
    send_alarms,
    send_raw,
)
from tests.support.oncall_helpers import alarm
from tests.support.pipeline import Pipeline
from tests.support.stack_helpers import influx_query, topic_records, wait_for

FID = "DR-OF-020"  # routed to the "slow" team: one page on the webhook, nothing escalates


def test_garbage_on_internal_topics_is_dead_lettered_and_the_next_alarm_handled(
        pipeline: Pipeline, notifier: Notifier, stack: Stack) -> None:  # noqa: F811
    nonce = secrets.token_hex(8).encode()
    garbage = b"\xff\xfe" + nonce  # not UTF-8, not JSON
    wrong_shape = b'{"facility_id": "' + FID.encode() + b'", "nonce": "' + nonce + b'"}'
    send_raw(stack, topics.ALARMS, FID, [garbage, wrong_shape])
    send_raw(stack, topics.ACKS, FID, [garbage])
    ev = alarm(fid=FID, sensor=f"{FID}-L1", level="yellow", started=datetime.now(UTC))
    send_alarms(stack, [ev])  # the same partition, after the garbage

    # The notifier still pages the valid alarm …
    wait_for(lambda: notifier.pages_for(FID), 60, what="the page of the alarm after garbage")
    # … and the writer still stores it.
    wait_for(lambda: influx_query(stack, 'SELECT "alarm_id" FROM "long"."alarm_event" WHERE '
                                         f"\"alarm_id\" = '{ev.alarm_id}'"),
             60, what="the alarm after garbage in InfluxDB")

    def ours() -> list[dict[str, Any]]:
        found = [d for d in topic_records(stack, topics.READINGS_DLQ)
                 if nonce in base64.b64decode(d["payload_b64"])]
        return found if len(found) >= 5 else []

    dead = wait_for(ours, 60, what="five dead letters")
    got = sorted((d["service"], d["source"].split("[")[0], d["reason"]) for d in dead)
    assert got == [
        ("notifier", f"kafka:{topics.ACKS}", "undecodable_event"),
        ("notifier", f"kafka:{topics.ALARMS}", "invalid_contract"),
        ("notifier", f"kafka:{topics.ALARMS}", "undecodable_event"),
        ("writer", f"kafka:{topics.ALARMS}", "invalid_contract"),
        ("writer", f"kafka:{topics.ALARMS}", "undecodable_event")]
    assert all(d["source"].rsplit("@", 1)[1].isdigit() and d["facility_id"] == FID
               for d in dead)
    assert {base64.b64decode(d["payload_b64"]) for d in dead} == {garbage, wrong_shape}
    # Both agents are alive, and counted what they dead-lettered.
    _, n_counters = get_json(f"http://127.0.0.1:{notifier.svc.health_port}/counters")
    assert n_counters["dead_lettered"] >= 3
    writer = pipeline.services["writer"]
    assert writer.counters()["dead_lettered"] >= 2
    assert writer.health()[0] == 200 and notifier.svc.health()[0] == 200
