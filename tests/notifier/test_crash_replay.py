"""Abort and replay: the notifier stops dead (``LIFELINE_CRASH_AT=notifier.after_page``)
right after a channel accepted a page and before its outcome reached Kafka, then restarts.

What the design gives (services/notifier/app.py, decision 0008): the notification was
saved as *pending* in the changelog-backed table before the channel saw it, and its
outcome never came back, so the worker that resumes the partition sends it again — with
the same notification id (derived from alarm, step and repeat; the receiver can drop the
copy by that id). Nothing is lost and nothing else is repeated: the escalation then goes
on exactly as in an uninterrupted run. So the receiver gets, for the crashed alarm:
its first page exactly twice with one notification id (once before the crash, once after
the restart), the next step's page exactly once, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from schemas import codec
from schemas.alarm import AlarmEvent
from services.core import topics
from services.core.crash import CRASH_EXIT
from services.stack.manager import Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess
from tests.support.oncall_helpers import alarm
from tests.support.pipeline import faust_ready
from tests.support.stack_helpers import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

WEBHOOK_SECRET = "crash-replay-webhook-secret-0123"
FIRST_WAIT_S = 2.0  # the first step's wait: the next step is due during the restart


def oncall_file(path: Path, receiver_port: int, fid: str) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    hook = {"id": "hook", "type": "webhook", "url": f"http://127.0.0.1:{receiver_port}/webhook",
            "secret_env": "TEST_WEBHOOK_SECRET", "personal": True}
    doc = {
        "people": [{"id": "rita", "name": "Rita"}, {"id": "sam", "name": "Sam"}],
        "channels": [hook],
        "teams": [{"id": "crash", "name": "Crash", "layers": [
            {"name": "l", "members": ["rita"], "handover": start, "shift_hours": 24}],
            "escalation": [
                {"notify": "on_duty", "channels": ["hook"], "wait_s": FIRST_WAIT_S},
                {"notify": "person:sam", "channels": ["hook"], "wait_s": 3600}]}],
        # Only this test's facility is routed: alarms of other tests on the shared stack
        # page nobody here.
        "routes": [{"match": {"facility": [fid]}, "team": "crash"}],
        "grouping": {"window_s": 0},  # every page its own message
    }
    path.write_text(yaml.safe_dump(doc))


def send_alarm(stack: Stack, ev: AlarmEvent) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}")
        await p.start()
        try:
            await p.send_and_wait(topics.ALARMS, codec.ALARM_EVENT.encode(ev),
                                  key=ev.facility_id.encode())
        finally:
            await p.stop()

    asyncio.run(go())


def pages(received: Path, fid: str) -> list[tuple[str, str, str, str]]:
    """(person, kind, alarm id, notification id) of every page for ``fid``, in order."""
    if not received.exists():
        return []
    out = []
    for line in received.read_text().splitlines():
        m = json.loads(line)
        if m["channel"] != "webhook":
            continue
        assert m["problems"] == [], m
        out += [(m["body"]["person"], a["notification"], a["alarm_id"], a["notification_id"])
                for a in m["body"]["alarms"] if a["facility_id"] == fid]
    return out


def test_a_crash_after_a_page_sends_it_once_more_and_the_escalation_goes_on(
        stack: Stack, pipeline_env: dict[str, str],
        tmp_path: Path) -> None:
    fid = f"CRASH-NT-{uuid.uuid4().hex[:8]}"
    received, port_file = tmp_path / "received.jsonl", tmp_path / "port"
    rx = spawn([sys.executable, "-m", "tests.support.receivers", "--out", str(received),
                "--port-file", str(port_file), "--webhook-secret", WEBHOOK_SECRET],
               log=tmp_path / "receiver.log", env=dict(os.environ))
    try:
        port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                            what="receiver port"))
        oncall_file(tmp_path / "oncall.yaml", port, fid)
        env: dict[str, Any] = {
            **pipeline_env, "LIFELINE_NOTIFIER_ONCALL": str(tmp_path / "oncall.yaml"),
            "LIFELINE_NOTIFIER_PUBLIC_PORT": str(free_port()),
            "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5", "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
        assert "LIFELINE_CRASH_AT" not in os.environ
        crashing = ServiceProcess("notifier", {**env, "LIFELINE_CRASH_AT": "notifier.after_page:1"},
                                  stack.logs, free_port(), instance="-crash")
        crashing.start()
        try:
            crashing.wait_ready(90, ready=faust_ready)
            ev = alarm(fid=fid, sensor=f"{fid}-L1", level="orange", started=datetime.now(UTC))
            send_alarm(stack, ev)
            assert crashing.proc is not None
            assert crashing.proc.wait(60) == CRASH_EXIT
        finally:
            crashing.kill()  # only if it did not stop at its crash point
        assert '"event": "crash_point.hit", "point": "notifier.after_page", "pass": 1' in \
            crashing.tail(200_000)
        first = pages(received, fid)
        assert [(p[0], p[1], p[2]) for p in first] == [("rita", "page", ev.alarm_id)]

        restarted = ServiceProcess("notifier", env, stack.logs, free_port(), instance="-crash")
        restarted.start()
        try:
            restarted.wait_ready(90, ready=faust_ready)

            def settled() -> bool:
                # The copy and the next step delivered (only this facility pages rita, sam).
                return (len(pages(received, fid)) >= 3
                        and restarted.counters().get("notifications_delivered", 0) >= 2)

            wait_for(settled, 60, what="the page sent again and the next step")
            got = pages(received, fid)
            assert got[0] == first[0]
            rita = first[0][3]
            [sam] = {p[3] for p in got if p[0] == "sam"}
            # Exactly: the crashed page twice with one id, the next step once, nothing else.
            assert Counter(got) == Counter({("rita", "page", ev.alarm_id, rita): 2,
                                            ("sam", "page", ev.alarm_id, sam): 1}), got
            assert rita != sam
            counters = restarted.counters()
            assert counters["notifications_delivered"] == 2, counters
            assert counters["escalations"] == 1, counters
        finally:
            restarted.stop()
    finally:
        rx.kill()
        rx.wait(5)
