"""Alarms that hold when lives are at stake, through the real pipeline: MQTT → ingest →
Tansu → processor → notifier → a local HTTP receiver standing in for the SMS gateway and
the duty room's webhook (decision 0014).

The facilities are the TEST-* life-safety ones of the session registry (conftest): their
maintenance windows are open for the whole session and they report every 2 seconds, so
outages show within seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.stack.manager import Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline, faust_ready
from tests.support.stack_helpers import influx_query, now_ms, report, topic_records, wait_for

SMS_KEY = "integration-sms-key-0123456789"
HOOK_SECRET = "integration-life-webhook-0123"
CREW_PHONE = "13800000099"
DUTY_PHONE = "13800000071"


@dataclass
class Receiver:
    path: Path

    def messages(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def sms_to(self, phone: str, facility: str) -> list[dict[str, Any]]:
        return [m for m in self.messages() if m["channel"] == "sms"
                and m["body"]["to"] == phone and facility in m["body"]["text"]]

    def hooks_for(self, facility: str) -> list[dict[str, Any]]:
        """Webhook pages: (person, alarm) for every alarm of ``facility``."""
        return [{"person": m["body"]["person"], **a} for m in self.messages()
                if m["channel"] == "webhook" for a in m["body"]["alarms"]
                if a["facility_id"] == facility]


def oncall_file(path: Path, port: int) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    url = f"http://127.0.0.1:{port}"
    doc = {
        "people": [{"id": "duty.eng", "name": "值班工程师 Duty Engineer", "phone": DUTY_PHONE},
                   {"id": "inst.eng", "name": "运维 Instruments", "phone": "13800000072"}],
        "channels": [
            {"id": "hook", "type": "webhook", "url": f"{url}/webhook",
             "secret_env": "TEST_LIFE_HOOK_SECRET"},
            {"id": "sms", "type": "sms", "url": f"{url}/sms", "token_env": "TEST_LIFE_SMS_KEY"}],
        "urgent_channels": ["sms"],
        "teams": [
            {"id": "duty", "name": "Duty", "layers": [{"name": "l", "members": ["duty.eng"],
                                                      "handover": start, "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 3600}]},
            {"id": "inst", "name": "Instruments",
             "layers": [{"name": "l", "members": ["inst.eng"], "handover": start,
                         "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 14400}]}],
        "routes": [{"match": {"category": ["sensor", "gateway"]}, "team": "inst"},
                   {"team": "duty"}],
        "grouping": {"window_s": 1.0, "burst": 50},
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def receiver(pipeline: Pipeline, pipeline_env: dict[str, str], stack: Stack,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    d = tmp_path_factory.mktemp("life")
    out, port_file = d / "received.jsonl", d / "port"
    rx = spawn([sys.executable, "-m", "tests.support.receivers", "--out", str(out), "--port-file",
                str(port_file), "--webhook-secret", HOOK_SECRET, "--sms-key", SMS_KEY],
               log=d / "receiver.log", env=dict(os.environ))
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                        what="receiver port"))
    oncall_file(d / "oncall.yaml", port)
    health, public = free_port(), free_port()  # the acknowledgement page has its own port
    env = {**pipeline_env, "LIFELINE_NOTIFIER_ONCALL": str(d / "oncall.yaml"),
           "LIFELINE_NOTIFIER_PUBLIC_PORT": str(public),
           "LIFELINE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{public}",
           "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5",
           "TEST_LIFE_HOOK_SECRET": HOOK_SECRET, "TEST_LIFE_SMS_KEY": SMS_KEY}
    svc = ServiceProcess("notifier", env, stack.logs, health)
    svc.start()
    svc.wait_ready(90, ready=faust_ready)
    try:
        yield Receiver(out)
    finally:
        svc.stop()
        rx.kill()
        rx.wait(5)


def alarms_of(pipeline: Pipeline, facility: str) -> list[dict[str, Any]]:
    return [a for a in topic_records(pipeline.stack, "lifeline.alarms", idle=0.5)
            if a["facility_id"] == facility]


class Gateway:
    """One test facility's gateway: reports now, one report per call."""

    def __init__(self, publisher: Publisher, kind: str, fid: str) -> None:
        self.pub, self.topic, self.seq = publisher, f"lifeline/{kind}/{fid}/telemetry", 0

    def send(self, *readings: tuple[str, str, float, str], ts: int | None = None) -> None:
        self.seq += 1
        self.pub.publish(self.topic, report(self.seq, now_ms() if ts is None else ts,
                                            list(readings)))
        assert self.pub.flush(10)


def test_h2s_red_in_a_dredging_window_pages_crew_leader_and_duty_at_once(
        pipeline: Pipeline, receiver: Receiver, publisher: Publisher) -> None:
    gw = Gateway(publisher, "sewage", "TEST-SP-1")
    gw.send(("TEST-SP-1-H1", "h2s", 3.0, "mg/m³"), ("TEST-SP-1-L1", "water_level", 1.0, "m"))
    time.sleep(1)
    t0 = time.time()
    gw.send(("TEST-SP-1-H1", "h2s", 80.0, "mg/m³"), ("TEST-SP-1-L1", "water_level", 2.2, "m"))
    crew = wait_for(lambda: receiver.sms_to(CREW_PHONE, "TEST-SP-1"), 60,
                    what="SMS to the crew leader")
    duty = wait_for(lambda: receiver.sms_to(DUTY_PHONE, "TEST-SP-1"), 60,
                    what="SMS to the duty engineer")
    assert crew[0]["at"] - t0 < 60 and duty[0]["at"] - t0 < 60
    assert crew[0]["problems"] == [] and "测试 Crew Leader" in crew[0]["body"]["text"]
    events = alarms_of(pipeline, "TEST-SP-1")
    gas = [e for e in events if e["sensor"] == "TEST-SP-1-H1" and e["event"] == "raised"]
    assert gas and gas[0]["level"] == "red" and not gas[0]["silenced"]
    assert gas[0]["entry"]["crew_phone"] == CREW_PHONE
    # Inside the same window the water level (named by it, yellow) is silenced: no page.
    level = [e for e in events if e["sensor"] == "TEST-SP-1-L1" and e["event"] == "raised"]
    assert level and level[0]["silenced"]
    time.sleep(3)
    assert not any(a["sensor"] == "TEST-SP-1-L1" for a in receiver.hooks_for("TEST-SP-1"))


def test_a_blue_sensor_fault_inside_night_works_pages_nobody(
        pipeline: Pipeline, receiver: Receiver, publisher: Publisher) -> None:
    gw = Gateway(publisher, "drainage", "TEST-NW-1")
    gw.send(("TEST-NW-1-L1", "water_level", 1.0, "m"))
    time.sleep(1)
    gw.send(("TEST-NW-1-L1", "water_level", 9.5, "m"))  # over range: a blue sensor fault
    fault = wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-NW-1")
                              if e["rule"] == "sensor-out-of-range"], 30,
                     what="the sensor fault event")
    assert fault[0]["category"] == "sensor" and fault[0]["level"] == "blue"
    assert fault[0]["silenced"]
    time.sleep(4)  # the notifier has seen it by now (ticks every 0.5 s)
    assert receiver.hooks_for("TEST-NW-1") == [] and receiver.sms_to(DUTY_PHONE,
                                                                       "TEST-NW-1") == []


def test_a_pump_station_dark_during_a_storm_pages_drainage_duty(
        pipeline: Pipeline, receiver: Receiver, publisher: Publisher) -> None:
    rain = Gateway(publisher, "drainage", "TEST-RG-1")
    rain.send(("TEST-RG-1-R1", "rainfall", 12.0, "mm"))  # 12 mm in the hour: under rain
    pump = Gateway(publisher, "drainage", "TEST-DP-1")
    for _ in range(3):
        pump.send(("TEST-DP-1-L1", "water_level", 1.0, "m"))
        time.sleep(1)
    t0 = time.time()  # power and RTU lost together: silence from now
    page = wait_for(lambda: [a for a in receiver.hooks_for("TEST-DP-1")
                             if a["rule"] == "facility-dark"], 600,
                    what="the duty engineer paged for the dark pump station")
    assert time.time() - t0 < 600
    assert page[0]["person"] == "duty.eng" and page[0]["level"] in ("orange", "red")
    dark = [e for e in alarms_of(pipeline, "TEST-DP-1") if e["rule"] == "facility-dark"]
    assert dark[0]["category"] == "facility" and dark[0]["suppressed_by"] is None
    pump.send(("TEST-DP-1-L1", "water_level", 1.0, "m"))  # power back
    wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-DP-1")
                      if e["rule"] == "facility-dark" and e["event"] == "cleared"], 30,
             what="dark alarm cleared when the station reports again")


def test_a_gauge_over_range_at_a_surcharged_manhole_keeps_the_red(
        pipeline: Pipeline, receiver: Receiver, publisher: Publisher) -> None:
    storm = Gateway(publisher, "drainage", "TEST-MH-1")
    for v in (1.2, 2.6):  # above the 1.0 m crown, then orange
        storm.send(("TEST-MH-1-L1", "water_level", v, "m"))
        time.sleep(1)
    storm.send(("TEST-MH-1-L1", "water_level", 9.9, "m"))  # submerged gauge: over range
    red = wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-MH-1")
                            if e["rule"] == "value-upper" and e["level"] == "red"], 30,
                   what="the level alarm at red")
    assert red[0]["held_by_fault"] is not None and red[0]["suppressed_by"] is None
    wait_for(lambda: [a for a in receiver.hooks_for("TEST-MH-1") if a["level"] == "red"], 30,
             what="the red paged")
    # The same failure on a dry day is a sensor fault only.
    dry = Gateway(publisher, "drainage", "TEST-MH-2")
    dry.send(("TEST-MH-2-L1", "water_level", 0.3, "m"))
    time.sleep(1)
    dry.send(("TEST-MH-2-L1", "water_level", 9.9, "m"))
    wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-MH-2")
                      if e["rule"] == "sensor-out-of-range"], 30, what="sensor fault")
    assert [e for e in alarms_of(pipeline, "TEST-MH-2") if e["category"] == "facility"] == []


def test_an_alarm_raised_during_a_fault_is_paged_when_the_fault_clears(
        pipeline: Pipeline, receiver: Receiver, publisher: Publisher) -> None:
    gw = Gateway(publisher, "drainage", "TEST-MH-3")
    for _ in range(10):  # 3.0 m for ~20 s: stuck after 6 s, the red needs 12 s
        gw.send(("TEST-MH-3-L1", "water_level", 3.0, "m"))
        time.sleep(2)
    events = wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-MH-3")
                               if e["rule"] == "value-upper"], 30, what="level alarm")
    assert events[0]["suppressed_by"] is not None  # the stuck fault came first, from calm
    time.sleep(2)
    assert receiver.hooks_for("TEST-MH-3") == [] or all(
        a["category"] != "facility" for a in receiver.hooks_for("TEST-MH-3"))
    gw.send(("TEST-MH-3-L1", "water_level", 3.05, "m"))  # changes: the fault clears
    upd = wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-MH-3")
                            if e["event"] == "updated" and e["suppressed_by"] is None], 30,
                   what="the updated event")
    assert upd[0]["alarm_id"] == events[0]["alarm_id"]
    page = wait_for(lambda: [a for a in receiver.hooks_for("TEST-MH-3")
                             if a["category"] == "facility"], 30,
                    what="the still-active alarm paged")
    assert page[0]["person"] == "duty.eng"


def test_one_spike_raises_nothing_and_a_sustained_rise_does(
        pipeline: Pipeline, publisher: Publisher) -> None:
    gw = Gateway(publisher, "drainage", "TEST-MH-4")
    sid = "TEST-MH-4-L1"
    t0 = now_ms() - 90 * 60_000  # a minute apart in event time, sent at once
    values = [1.0] * 20 + [2.3] + [1.0] * 10
    for i, v in enumerate(values):
        gw.send((sid, "water_level", v, "m"), ts=t0 + i * 60_000)
    time.sleep(3)
    wait_for(lambda: pipeline.services["processor"].counters().get("lag") == 0, 30,
             what="processor caught up")
    assert [e for e in alarms_of(pipeline, "TEST-MH-4") if e["category"] == "facility"] == []
    base = len(values)
    for i in range(1, 11):  # 0.1 m/min for ten minutes
        gw.send((sid, "water_level", 1.0 + 0.1 * i, "m"), ts=t0 + (base + i) * 60_000)
    rate = wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-MH-4")
                             if e["rule"].startswith("rate-")], 30, what="rate alarm")
    assert rate[0]["event"] == "raised"


def test_ppm_is_stored_and_evaluated_in_mg_per_m3(pipeline: Pipeline,
                                                  publisher: Publisher) -> None:
    gw = Gateway(publisher, "sewage", "TEST-SG-1")
    ts = now_ms()
    gw.send(("TEST-SG-1-H1", "h2s", 40.0, "ppm"), ts=ts)
    gw.send(("TEST-SG-1-H1", "h2s", 1.0, "furlongs"), ts=ts + 60_000)
    red = wait_for(lambda: [e for e in alarms_of(pipeline, "TEST-SG-1")
                            if e["event"] == "raised"], 30, what="H2S alarm")
    assert red[0]["level"] == "red" and red[0]["value"] == pytest.approx(40 * 34.08 / 24.45,
                                                                         rel=1e-6)
    stored = wait_for(lambda: influx_query(
        pipeline.stack, "SELECT value FROM reading WHERE sensor = 'TEST-SG-1-H1'"), 30,
        what="stored point")
    assert stored[0]["values"][0][1] == pytest.approx(55.755, rel=1e-3)
    dlq = wait_for(lambda: [d for d in topic_records(pipeline.stack, "lifeline.readings.dlq",
                                                     idle=0.5)
                            if d.get("facility_id") == "TEST-SG-1"], 30, what="dead letter")
    assert dlq[0]["reason"] == "bad_unit" and "furlongs" in dlq[0]["detail"]
