"""The notifier for real: alarm events on Tansu → the notifier process → a local HTTP
receiver; escalation on the wall clock; acknowledgement through the page in headless
Chromium and from the CLI; kill -9 mid-escalation; an alarm storm; the audit trail in
InfluxDB."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from aiokafka import AIOKafkaProducer

from schemas.alarm import AlarmEvent
from services.core import topics
from services.notifier.links import AckLink, Signer
from services.stack.manager import Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess
from tests.integration.conftest import Pipeline, faust_ready
from tests.integration.helpers import influx_query, wait_for
from tests.unit.oncall_helpers import alarm

FAST_WAIT_S = 4.0
FAST = ["DR-OF-010", "DR-OF-011", "DR-OF-005"]  # escalate every FAST_WAIT_S
WEBHOOK_SECRET = "integration-webhook-secret-0123"


@dataclass
class Notifier:
    svc: ServiceProcess
    received: Path
    secret: str
    public_url: str

    def messages(self) -> list[dict[str, Any]]:
        if not self.received.exists():
            return []
        return [json.loads(line) for line in self.received.read_text().splitlines() if line]

    def pages_for(self, facility: str) -> list[tuple[str, str, str]]:
        """(person, kind, ack_url) of every alarm of ``facility`` received, in order."""
        out = []
        for m in self.messages():
            for a in m["body"]["alarms"]:
                if a["facility_id"] == facility:
                    out.append((m["body"]["person"], a["notification"], a["ack_url"]))
        return out


def oncall_file(path: Path, receiver_port: int) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    hook = {"id": "hook", "type": "webhook", "url": f"http://127.0.0.1:{receiver_port}/webhook",
            "secret_env": "TEST_WEBHOOK_SECRET"}
    doc = {
        "people": [{"id": p, "name": p.title()} for p in ("ann", "chief", "boss", "eve")],
        "channels": [hook],
        "teams": [
            {"id": "fast", "name": "Fast", "layers": [{"name": "l", "members": ["ann"],
                                                      "handover": start, "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": FAST_WAIT_S},
                            {"notify": "person:chief", "channels": ["hook"], "wait_s": FAST_WAIT_S},
                            {"notify": "person:boss", "channels": ["hook"], "wait_s": FAST_WAIT_S}]},
            {"id": "slow", "name": "Slow", "layers": [{"name": "l", "members": ["eve"],
                                                      "handover": start, "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 3600}]},
        ],
        "routes": [{"match": {"facility": FAST}, "team": "fast"}, {"team": "slow"}],
        "grouping": {"window_s": 2.0, "max_listed": 10},
    }
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def notifier(pipeline: Pipeline, pipeline_env: dict[str, str], stack: Stack,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifier]:
    d = tmp_path_factory.mktemp("notifier")
    received, port_file = d / "received.jsonl", d / "port"
    rx = spawn([sys.executable, "-m", "tests.receivers", "--out", str(received),
                "--port-file", str(port_file), "--webhook-secret", WEBHOOK_SECRET],
               log=d / "receiver.log", env=dict(os.environ))
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                        what="receiver port"))
    oncall_file(d / "oncall.yaml", port)
    health = free_port()
    public = f"http://127.0.0.1:{health}"
    env = {**pipeline_env, "LIFELINE_NOTIFIER_ONCALL": str(d / "oncall.yaml"),
           "LIFELINE_NOTIFIER_PUBLIC_URL": public, "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5",
           "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    svc = ServiceProcess("notifier", env, stack.logs, health)
    svc.start()
    svc.wait_ready(90, ready=faust_ready)
    try:
        yield Notifier(svc, received, env["LIFELINE_NOTIFIER_LINK_SECRET"], public)
    finally:
        svc.stop()
        rx.kill()
        rx.wait(5)


def send_alarms(stack: Stack, events: list[AlarmEvent]) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}")
        await p.start()
        try:
            for ev in events:
                await p.send_and_wait(topics.ALARMS, ev.model_dump_json().encode(),
                                      key=ev.facility_id.encode())
        finally:
            await p.stop()

    asyncio.run(go())


def http(url: str, data: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, data=body, timeout=10) as r:  # noqa: S310 — loopback
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("Debian chromium and chromium-driver are not installed "
                    "(scripts/bootstrap.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def records(stack: Stack, alarm_id: str) -> list[dict[str, Any]]:
    series = influx_query(stack, 'SELECT * FROM "long"."oncall" WHERE "alarm_id" = '
                                 f"'{alarm_id}'")
    if not series:
        return []
    cols = series[0]["columns"]
    return [dict(zip(cols, v, strict=True)) for v in series[0]["values"]]


def test_page_escalate_and_acknowledge_in_the_browser(notifier: Notifier,
                                                      stack: Stack) -> None:
    fid = FAST[0]
    ev = alarm(fid=fid, sensor=f"{fid}-L1", level="orange", started=datetime.now(UTC))
    t0 = time.time()
    send_alarms(stack, [ev])
    wait_for(lambda: notifier.pages_for(fid), 30, what="first page")
    first = notifier.messages()[-1]
    assert first["problems"] == []  # the receiver verified the HMAC signature
    assert first["at"] - t0 < 5
    # Not acknowledged: the section chief is paged after the step's wait.
    pages = wait_for(lambda: [p for p in notifier.pages_for(fid) if p[0] == "chief"],
                     FAST_WAIT_S * 4, what="escalation to the chief")
    assert [p[0] for p in notifier.pages_for(fid)] == ["ann", "chief"]
    ack_url = pages[0][2]
    driver = chromium()
    try:
        driver.get(ack_url)
        assert fid in driver.page_source and "Acknowledge" in driver.page_source
        driver.find_element("id", "comment").send_keys("on my way 正在处理")
        driver.find_element("id", "acknowledge").click()
        from selenium.webdriver.support.ui import WebDriverWait

        done = WebDriverWait(driver, 15).until(
            lambda d: d.find_elements("id", "done") and d.find_element("id", "done").text)
        assert "Acknowledged" in done or "已确认" in done
        assert "chief" in driver.page_source
    finally:
        driver.quit()
    # The escalation stopped: the bureau director is never paged.
    time.sleep(FAST_WAIT_S * 2)
    assert [p[0] for p in notifier.pages_for(fid)] == ["ann", "chief"]
    # The link cannot be used again, forged links and expired links are refused.
    status, page, headers = http(ack_url, {"action": "acknowledge"})
    assert status == 409 and "already been used" in page
    assert headers["Referrer-Policy"] == "no-referrer" and "frame-ancestors" in headers[
        "Content-Security-Policy"]
    token = ack_url.rsplit("/", 1)[1]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert http(f"{notifier.public_url}/ack/{forged}")[0] == 403
    assert http(f"{notifier.public_url}/ack/{forged}", {"action": "resolve"})[0] == 403
    with mock.patch("itsdangerous.timed.time.time", return_value=time.time() - 3 * 86400):
        old = Signer(notifier.secret, 86400).sign(AckLink(ev.alarm_id, fid, "ann", "n-old"))
    assert http(f"{notifier.public_url}/ack/{old}", {"action": "acknowledge"})[0] == 410
    # Audit trail and the active-alarm state in InfluxDB (written by the writer).
    recs = wait_for(lambda: [r for r in records(stack, ev.alarm_id)
                             if r["type"] == "acknowledged"] and records(stack, ev.alarm_id),
                    30, what="audit trail in InfluxDB")
    types = [r["type"] for r in sorted(recs, key=lambda r: r["time"])]
    assert types.count("notification") == 2 and types.count("delivered") == 2
    assert "escalated" in types and "acknowledged" in types and "stopped" in types
    acked = next(r for r in recs if r["type"] == "acknowledged")
    assert acked["person"] == "chief" and acked["detail"] == "on my way 正在处理"
    # The active-alarm table shows who acknowledged (the overview dashboard's query).
    state = influx_query(stack, 'SELECT last("acked_by") AS "by", last("severity") AS "sev" '
                                'FROM "long"."alarm_state" WHERE "facility" = '
                                f"'{fid}' GROUP BY \"sensor\"")
    assert state and state[0]["values"][0][1:] == ["chief", 3]
    cli = subprocess.run([sys.executable, "-m", "services.cli", "oncall", "history",
                          ev.alarm_id], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **stack.env()}, check=True)
    assert [json.loads(line)["type"] for line in cli.stdout.splitlines()] == types


def test_kill_notifier_mid_escalation_resumes_without_double_pages(
        notifier: Notifier, stack: Stack) -> None:
    fid = FAST[1]
    ev = alarm(fid=fid, sensor=f"{fid}-L1", level="yellow", started=datetime.now(UTC))
    send_alarms(stack, [ev])
    wait_for(lambda: notifier.pages_for(fid), 30, what="first page")
    time.sleep(1.0)  # the delivery outcome reaches the table
    notifier.svc.kill()
    notifier.svc.start()
    notifier.svc.wait_ready(90, ready=faust_ready)
    people = wait_for(lambda: [p[0] for p in notifier.pages_for(fid) if p[0] != "ann"],
                      FAST_WAIT_S * 6 + 30, what="escalation after the restart")
    assert people[0] == "chief"
    # Acknowledge from the command line: the escalation stops.
    subprocess.run([sys.executable, "-m", "services.cli", "oncall", "ack", ev.alarm_id,
                    "--by", "chief", "--comment", "cli ack"], capture_output=True, text=True,
                   timeout=60, env={**os.environ, **stack.env()}, check=True)
    time.sleep(FAST_WAIT_S * 2.5)
    got = [p[0] for p in notifier.pages_for(fid)]
    assert got.count("ann") == 1, got  # nobody paged twice for the same step
    assert got.count("chief") == 1, got
    assert got.count("boss") <= 1, got  # the ack may cross the third step


def test_alarm_storm_becomes_a_bounded_number_of_messages(notifier: Notifier,
                                                          stack: Stack) -> None:
    now = datetime.now(UTC)
    before = len(notifier.messages())
    fids = [f"STORM-{i:03d}" for i in range(50)]
    events = [alarm(fid=f, sensor=f"{f}-S{j}", level="blue", started=now) for f in fids
              for j in range(10)]
    send_alarms(stack, events)
    def listed() -> list[tuple[str, str]]:
        return [(a["alarm_id"], a["notification"]) for m in notifier.messages()[before:]
                for a in m["body"]["alarms"] if a["facility_id"].startswith("STORM-")]

    wait_for(lambda: len(listed()) >= 500, 60, what="all 500 alarms listed")
    time.sleep(3)  # nothing more should come (the team's next step is an hour away)
    msgs = [m for m in notifier.messages()[before:]
            if any(a["facility_id"].startswith("STORM-") for a in m["body"]["alarms"])]
    # Every alarm paged exactly once, in messages the receiver accepted.
    assert sorted(listed()) == sorted((ev.alarm_id, "page") for ev in events)
    assert all(m["problems"] == [] for m in msgs)
    assert "undeliverable" not in notifier.svc.tail(200_000)
    # One recipient: one message at once, then one per grouping window (2 s) while the
    # storm lasts — a handful, not 500 pages.
    assert len(msgs) <= 15, len(msgs)
