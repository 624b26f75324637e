"""Ingest's trust boundary on the real stack (issue 14): a gateway's store-and-forward
backlog stored whole while a flood beside it is limited into the DLQ and a normal gateway
is untouched; retained and QoS 0 messages dead-lettered with their reasons; a dead
letter replayed with ``lifeline dlq replay`` is stored, and a second replay overwrites.

The local broker ties client ids to usernames (``use_username_as_clientid``): one
connection per account at a time, so the tests that publish with their own MQTT client
do not use the ``publisher`` fixture (the same simulator account)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from services.core import topics
from services.stack.manager import Ports, Stack
from simulators.publisher import Publisher
from tests.support.pipeline import (
    TEST_FACILITIES,
    Pipeline,
    running_pipeline,
    write_registry,
)
from tests.support.stack_helpers import influx_count, now_ms, report, topic_records, wait_for

# A stack of its own (its `stack` fixture).
pytestmark = pytest.mark.integration

# This module counts rate-limit decisions and stored points exactly: it runs on a stack and
# services of its own (what the session's other tests sent before would change the counts:
# their gateways' token buckets, their facilities' points).


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("trust-stack"), Ports.free())
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="module")
def pipeline_env(stack: Stack) -> dict[str, str]:
    path = stack.state / "registry.yaml"
    write_registry(path, TEST_FACILITIES)
    return {**stack.env(), "LIFELINE_REGISTRY": str(path),
            "LIFELINE_WRITER_BATCH_SECONDS": "0.2", "LIFELINE_WRITER_RETRY_MAX_S": "1",
            "LIFELINE_PROCESSOR_TICK_INTERVAL_S": "1", "LIFELINE_HEALTH_REPORT_S": "2",
            # one record per report here (the local stack packs): both shapes run live
            "LIFELINE_INGEST_PACK_MS": "0"}


@pytest.fixture(scope="module")
def pipeline(stack: Stack, pipeline_env: dict[str, str]) -> Iterator[Pipeline]:
    with running_pipeline(stack, pipeline_env) as p:
        yield p

BACKLOG, FLOOD, NORMAL = "DR-KG-002", "DR-LW-003", "DR-KG-003"
HYGIENE = REPLAY = "DR-KJ-002"  # at different event times


def _topic(fid: str) -> str:
    return f"lifeline/drainage/{fid}/telemetry"


def _level(fid: str, seq: int, ts_ms: int, value: float = 1.0) -> bytes:
    return report(seq, ts_ms, [(f"{fid}-L1", "water_level", value, "m")])


def _raw_publish(stack: Stack, items: list[tuple[str, bytes, int, bool]]) -> None:
    """Publish (topic, payload, qos, retain) with a plain paho client (the simulator's
    account), waiting until each is out."""
    env = stack.env()
    connected = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="trust-raw")  # = username there
    c.username_pw_set(env["LIFELINE_SIMULATOR_MQTT_USERNAME"],
                      env["LIFELINE_SIMULATOR_MQTT_PASSWORD"])
    c.on_connect = lambda *_a: connected.set()
    c.connect("127.0.0.1", stack.ports.mqtt)
    c.loop_start()
    try:
        assert connected.wait(10), "cannot connect to the local broker"
        infos = [c.publish(t, p, qos=q, retain=r) for t, p, q, r in items]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def _ingest_letters(stack: Stack, **match: Any) -> list[dict[str, Any]]:
    return [d for d in topic_records(stack, topics.READINGS_DLQ)
            if d["service"] == "ingest" and all(d.get(k) == v for k, v in match.items())]


def _since(d: dict[str, Any], when: datetime) -> bool:
    return datetime.fromisoformat(d["received_at"]) >= when


def _delta(after: dict[str, Any], before: dict[str, Any], name: str) -> int:
    return int(after.get(name, 0)) - int(before.get(name, 0))


def test_a_backlog_is_stored_whole_beside_a_limited_flood_and_a_normal_gateway(
        pipeline: Pipeline, publisher: Publisher) -> None:
    stack, ingest = pipeline.stack, pipeline.services["ingest"]
    before = ingest.counters()
    since = datetime.now(UTC) - timedelta(seconds=1)
    now = now_ms()
    start = now - 25 * 3600_000  # a day's reports, one a minute, from 25 h ago
    flood_at = now - 5_000  # the flood: thousands of reports of one near-now event time
    sent = 0
    for i in range(3000):
        publisher.publish(_topic(FLOOD), _level(FLOOD, 50_000 + i, flood_at, 1.0 + i / 10_000))
        sent += 1
        if i < 1440:
            publisher.publish(_topic(BACKLOG), _level(BACKLOG, i + 1, start + i * 60_000))
            sent += 1
        if i % 100 == 0:
            publisher.publish(_topic(NORMAL), _level(NORMAL, i // 100 + 1, now - 2_000 + i))
            sent += 1
    assert publisher.flush(120)

    def settled() -> dict[str, Any]:
        c = ingest.counters()
        return c if _delta(c, before, "received") >= sent else {}

    wait_for(settled, timeout=120, what=f"ingest received all {sent}")
    # The whole backlog stored, at its event times; the normal gateway untouched.
    backlog_where = (f"facility='{BACKLOG}' AND time >= {start}ms "
                     f"AND time <= {start + 1439 * 60_000}ms")
    try:
        wait_for(lambda: influx_count(stack, backlog_where) == 1440, timeout=180, interval=1,
                 what="all 1,440 backlog reports stored")
    except AssertionError as exc:
        letters = [(d["service"], d["reason"], d["detail"][:160])
                   for d in topic_records(stack, topics.READINGS_DLQ)
                   if d.get("facility_id") == BACKLOG and _since(d, since)]
        raise AssertionError(f"{exc}; stored {influx_count(stack, backlog_where)}; ingest "
                             f"counters {ingest.counters()}; dead letters {letters[:5]} "
                             f"({len(letters)})") from exc
    normal_where = f"facility='{NORMAL}' AND time >= {now - 2_000}ms AND time < {now + 1_000}ms"
    wait_for(lambda: influx_count(stack, normal_where) == 30, timeout=60,
             what="every normal report stored")
    # The flood: its burst went through, the rest was limited (1,000 burst, 20/s).
    after = ingest.counters()
    limited = _delta(after, before, "rate_limited")
    assert 1000 <= limited <= 2000, limited
    assert _delta(after, before, "backlog_admitted") >= 1440

    def flood_letters() -> list[dict[str, Any]]:
        return [d for d in _ingest_letters(stack, facility_id=FLOOD, reason="rate_limited")
                if _since(d, since)]

    dlq = wait_for(lambda: (d := flood_letters()) and len(d) >= limited and d, timeout=60,
                   what=f"{limited} rate_limited dead letters")
    assert len(dlq) == limited  # one per limited message, none thrown away
    assert "over its rate" in dlq[0]["detail"]
    for d in dlq:  # each keeps the bytes it stands for
        raw = base64.b64decode(d["payload_b64"])
        assert hashlib.sha256(raw).hexdigest() == d["payload_sha256"]
        assert json.loads(raw)["seq"] >= 50_000
    assert not [d for d in _ingest_letters(stack) if d["facility_id"] in (BACKLOG, NORMAL)
                and _since(d, since)]
    code, body = ingest.health()
    assert code == 200, body


def test_retained_and_qos0_messages_are_dead_lettered_with_their_reasons(
        pipeline: Pipeline) -> None:
    stack = pipeline.stack
    t0 = now_ms() - 60_000
    qos0 = _level(HYGIENE, 1, t0 + 1_000)
    retained = _level(HYGIENE, 2, t0)
    _raw_publish(stack, [(_topic(HYGIENE), qos0, 0, False)])
    sha = hashlib.sha256(qos0).hexdigest()
    [dl] = wait_for(lambda: _ingest_letters(stack, payload_sha256=sha), what="QoS 0 refused")
    assert dl["reason"] == "qos0" and dl["facility_id"] == HYGIENE and "QoS 0" in dl["detail"]

    try:
        # Published retained, it reaches ingest at once as an ordinary message (the
        # broker clears the flag for existing subscriptions) and is stored ...
        _raw_publish(stack, [(_topic(HYGIENE), retained, 1, True)])
        wait_for(lambda: influx_count(stack, f"facility='{HYGIENE}' AND time = {t0}ms") == 1,
                 what="the live copy stored")
        # ... but the broker replays it on every subscription, retain flag set: on
        # ingest's next connection it is refused, not taken for a new report.
        pipeline.restart("ingest", kill=False)
        sha = hashlib.sha256(retained).hexdigest()
        [dl] = wait_for(lambda: [d for d in _ingest_letters(stack, payload_sha256=sha)
                                 if d["reason"] == "retained"], timeout=60,
                        what="the replayed retained message refused")
        assert dl["facility_id"] == HYGIENE and base64.b64decode(dl["payload_b64"]) == retained
    finally:
        _raw_publish(stack, [(_topic(HYGIENE), b"", 1, True)])  # clear the retained message
    assert influx_count(stack, f"facility='{HYGIENE}' AND time = {t0 + 1_000}ms") == 0


def test_a_dead_letter_replayed_with_the_cli_is_stored_once(
        pipeline: Pipeline, pipeline_env: dict[str, str]) -> None:
    stack = pipeline.stack
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    t0 = now_ms() - 30 * 60_000
    payload = _level(REPLAY, 77, t0, 2.25)
    _raw_publish(stack, [(_topic(REPLAY), payload, 0, False)])  # QoS 0: dead-lettered
    sha = hashlib.sha256(payload).hexdigest()
    wait_for(lambda: _ingest_letters(stack, payload_sha256=sha, reason="qos0"),
             what="the QoS 0 dead letter")
    where = f"facility='{REPLAY}' AND time = {t0}ms"
    assert influx_count(stack, where) == 0

    def replay(*extra: str) -> dict[str, Any]:
        res = subprocess.run(
            [sys.executable, "-m", "services.cli", "dlq", "replay", "--reason", "qos0",
             "--since", since, "--facility", REPLAY, *extra],
            env={**os.environ, **pipeline_env}, capture_output=True, text=True, timeout=120,
            check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        summary: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        return summary

    dry = replay("--dry-run")
    assert (dry["selected"], dry["replayed"], dry["dry_run"]) == (1, 1, True)
    first = replay()
    assert (first["selected"], first["replayed"], first["still_refused"]) == (1, 1, 0)
    wait_for(lambda: influx_count(stack, where) == 1, timeout=60, what="the replayed report")
    second = replay()  # same event time: the point is overwritten, not doubled
    assert second["replayed"] == 1
    wait_for(lambda: influx_count(stack, f"facility='{REPLAY}' AND time >= {t0 - 1}ms "
                                         f"AND time <= {t0 + 1}ms") == 1, what="still one")
