"""Issue 18's duty kinds end to end, with the shipped registry and the shipped on-call file
(decision 0023): readings over MQTT for a construction site, the treatment plant, a storm
outfall and a self-built house, and a rainstorm over Longwan → ingest → Kafka → the
processor (and its district desk) → the writer → InfluxDB, read back by each kind's
generated dashboard → the notifier, which pages the people each duty names: the site's
responsible person and the bureau's dust inspector, the plant's operators and the drainage
duty, the housing section and the structures duty — and one page for the district's
rainstorm, none for its rain gauges.

Its own stack: the session stack's example facilities carry other tests' watermarks. The
phone network is the local receiver (tests/support/receivers.py): every channel of the
shipped file, by its id, becomes a signed webhook there — teams, rotas, escalation and
routes are the shipped ones."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.oncall import OnCallConfig, load_oncall
from schemas.registry import Registry, load_registry
from services.dashboards.generate import dashboards
from services.notifier.escalation import route
from services.notifier.rota import on_duty
from services.stack.manager import Ports, Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher
from tests.support.paths import EXAMPLE_REGISTRY, ROOT
from tests.support.pipeline import faust_ready, pipeline_env_of, running_pipeline
from tests.support.stack_helpers import influx_query, now_ms, report, wait_for

pytestmark = pytest.mark.integration

SECRET = "duty-kinds-webhook-secret-0123"
SHIPPED_ONCALL = ROOT / "deploy" / "oncall" / "wenzhou-bay.yaml"


@dataclass
class Duty:
    stack: Stack
    registry: Registry
    oncall: OnCallConfig
    received: Path
    publisher: Publisher

    def pages(self) -> list[dict[str, Any]]:
        """(person, alarm) of every alarm a webhook message carried."""
        if not self.received.exists():
            return []
        out = []
        for line in self.received.read_text().splitlines():
            m = json.loads(line)
            if m["channel"] == "webhook" and not m["problems"]:
                out += [{"person": m["body"]["person"], **a} for a in m["body"]["alarms"]]
        return out


def _oncall(path: Path, port: int) -> None:
    doc = yaml.safe_load(SHIPPED_ONCALL.read_text(encoding="utf-8"))
    doc["channels"] = [{"id": c["id"], "type": "webhook", "url": f"http://127.0.0.1:{port}/webhook",
                        "secret_env": "TEST_WEBHOOK_SECRET", "personal": True}
                       for c in doc["channels"]]
    # One-time codes for group links need an SMS gateway: one of its own (none is sent here,
    # every channel above being personal).
    doc["channels"].append({"id": "sms-codes", "type": "sms",
                            "url": f"http://127.0.0.1:{port}/sms", "token_env": "TEST_SMS_KEY"})
    doc["code_channel"] = "sms-codes"
    doc["grouping"] = {"window_s": 1.0, "burst": 20, "max_listed": 20}
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="module")
def duty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Duty]:
    d = tmp_path_factory.mktemp("duty-kinds")
    stack = Stack(d / "stack", Ports.free())
    stack.up()
    received, port_file = d / "received.jsonl", d / "port"
    rx = spawn([sys.executable, "-m", "tests.support.receivers", "--out", str(received),
                "--port-file", str(port_file), "--webhook-secret", SECRET,
                "--sms-key", "duty-kinds-sms-key-0123456789"],
               log=d / "receiver.log", env=dict(os.environ))
    try:
        port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                            what="receiver port"))
        _oncall(d / "oncall.yaml", port)
        env = {**pipeline_env_of(stack, EXAMPLE_REGISTRY),
               "LIFELINE_NOTIFIER_ONCALL": str(d / "oncall.yaml"),
               "LIFELINE_NOTIFIER_PUBLIC_PORT": str(free_port()),
               "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5", "TEST_WEBHOOK_SECRET": SECRET,
               "TEST_SMS_KEY": "duty-kinds-sms-key-0123456789"}
        with running_pipeline(stack, env):
            notifier = ServiceProcess("notifier", env, stack.logs, free_port())
            notifier.start()
            se = stack.env()
            pub = Publisher("127.0.0.1", stack.ports.mqtt, se["LIFELINE_SIMULATOR_MQTT_USERNAME"],
                            se["LIFELINE_SIMULATOR_MQTT_PASSWORD"], client_id="duty-kinds")
            try:
                notifier.wait_ready(90, ready=faust_ready)
                yield Duty(stack, load_registry(EXAMPLE_REGISTRY),
                           load_oncall(d / "oncall.yaml"), received, pub)
            finally:
                pub.close()
                notifier.stop()
    finally:
        rx.kill()
        rx.wait(5)
        stack.down()


def _series(duty: Duty, fid: str, sensor: str, value: float, count: int, step_s: int) -> None:
    f = duty.registry.facility(fid)
    s = duty.registry.sensor(fid, sensor)
    assert f is not None and s is not None
    end = now_ms() - 5_000
    for k in range(count):
        ts = end - (count - 1 - k) * step_s * 1000
        duty.publisher.publish(f"lifeline/{f.kind.value}/{fid}/telemetry", report(
            k + 1, ts, [(sensor, s.metric.value, value, s.unit)]))


def _first_pages(cfg: OnCallConfig, alarm: dict[str, Any]) -> set[str]:
    """Who the shipped file pages first for ``alarm``: the first step of each team it routes
    to at the alarm's level (the person on duty, or a named person)."""
    from schemas.kinds import AlarmLevel

    out = set()
    for tid in route(cfg, alarm):
        team = cfg.team(tid)
        step = team.escalation[team.first_step(AlarmLevel(alarm["level"]))]
        if step.notify == "on_duty":
            person = on_duty(team, datetime.now(UTC), cfg.zone)
            assert person is not None, tid
            out.add(person)
        else:
            out.add(step.notify.split(":", 1)[1])
    return out


CASES = [  # facility, sensor, value, readings, seconds apart: an alarm of each duty kind
    ("CS-KG-001", "CS-KG-001-PM10", 400.0, 70, 60),  # the hourly PM10 mean: orange
    ("PL-OF-001", "PL-OF-001-EF-NH3N", 12.0, 6, 300),  # effluent NH3-N over grade 1A's 5
    ("OF-OF-001", "OF-OF-001-L1", 3.3, 3, 60),  # the storm pipe near flooding: orange
    ("HB-LW-001", "HB-LW-001-T1", 0.45, 4, 600),  # a 0.8 % tilt: JGJ 125 grade C, orange
]


def test_each_duty_kind_reaches_influx_its_dashboard_and_its_people(duty: Duty) -> None:
    for fid, sensor, value, count, step in CASES:
        _series(duty, fid, sensor, value, count, step)
    gauges = [(f.id, s.id) for f in duty.registry.facilities if f.district == "Longwan"
              for s in f.sensors if s.metric.value == "rainfall"]
    for fid, sid in gauges:  # 10 mm every 5 minutes for 35 minutes: blue, then orange
        _series(duty, fid, sid, 10.0, 7, 300)
    assert duty.publisher.flush(30)
    boards = dashboards(duty.registry)

    def run(q: str, fid: str) -> list[dict[str, Any]]:
        q = (q.replace("$district", ".*").replace("$facility", fid).replace("$sensor", ".*")
             .replace("$timeFilter", "time > now() - 3h").replace("$__interval", "1m"))
        return influx_query(duty.stack, q)

    [table] = [p for p in boards["overview.json"]["panels"]
               if p["title"] == "活动告警 Active alarms"]
    for fid, sensor, _value, _count, _step in CASES:
        f = duty.registry.facility(fid)
        s = duty.registry.sensor(fid, sensor)
        assert f is not None and s is not None
        board = boards[f"{f.kind.value}.json"]
        # InfluxDB through the kind's own dashboard: the sensor's readings panel and the
        # alarm annotations; the alarm in the overview's active-alarm table.
        [panel] = [p for p in board["panels"] if p["type"] == "timeseries"
                   and f"\"metric\" = '{s.metric.value}'" in p["targets"][0]["query"]][:1]
        wait_for(lambda q=panel["targets"][0]["query"], f=fid: run(q, f), timeout=60,
                 what=f"{fid}'s readings on the {f.kind.value} dashboard")
        [annotation] = board["annotations"]["list"][-1:]
        wait_for(lambda q=annotation["query"], f=fid: run(q, f), timeout=60,
                 what=f"{fid}'s alarm annotations on the {f.kind.value} dashboard")
        wait_for(lambda x=fid: x in json.dumps(run(table["targets"][0]["query"], ".*")),
                 timeout=60, what=f"{fid} in the overview's active alarms")
    wait_for(lambda: "district-Longwan" in json.dumps(run(table["targets"][0]["query"], ".*")),
             timeout=60, what="the district's rainstorm in the overview's active alarms")

    def paged(fid: str) -> list[dict[str, Any]]:
        return [p for p in duty.pages() if p["facility_id"] == fid and p["category"] != "gateway"
                and p["notification"] == "page"]

    for fid, _sensor, _value, _count, _step in CASES:
        got = wait_for(lambda f=fid: paged(f), timeout=60, what=f"pages for {fid}")
        alarm = got[-1]
        want = _first_pages(duty.oncall, alarm)
        wait_for(lambda f=fid, w=want: w <= {p["person"] for p in paged(f)}, timeout=30,
                 what=f"{fid} paged to {sorted(want)}")
    # The site's: its responsible person and the bureau's dust inspector on duty.
    site = {p["person"] for p in paged("CS-KG-001")}
    assert "kg1.chen" in site and site & {"ye.inspector", "qian.inspector"}
    assert "oufei.ops" in {p["person"] for p in paged("PL-OF-001")}
    assert "housing.ops" in {p["person"] for p in paged("HB-LW-001")}
    # The rainstorm: one district alarm, paged to the drainage duty; the gauges page nobody.
    rain = wait_for(lambda: paged("district-Longwan"), timeout=60, what="the rainstorm page")
    assert {p["rule"] for p in rain} == {"rainstorm"} and {p["category"] for p in rain} == {
        "district"}
    assert len({p["alarm_id"] for p in rain}) == 1
    assert _first_pages(duty.oncall, rain[0]) <= {p["person"] for p in rain}
    # (Other alarms of those facilities page as always — a critical pump station whose
    # gateway falls silent in the rain is facility-dark — but no rain gauge's own.)
    others = [(p["facility_id"], p["rule"], p["metric"]) for fid, _ in gauges for p in paged(fid)]
    assert not [o for o in others if o[2] == "rainfall"], others
