"""The notifier for real: alarm events on Tansu → the notifier process → a local HTTP
receiver; escalation on the wall clock; acknowledgement through the page (on its own
public port) in headless Chromium and from the CLI; a link posted in a DingTalk group that
acknowledges only with the one-time code sent to the acting person's phone; forged
acknowledgements on Kafka ignored; kill -9 mid-escalation; an alarm storm; the audit
trail in InfluxDB."""

from __future__ import annotations

import asyncio
import json
import os
import re
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
from schemas.oncall import AckRequest
from services.core import topics
from services.notifier.acks import AckSigner
from services.notifier.links import AckLink, Signer
from services.stack.manager import Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess, get_json
from tests.support.oncall_helpers import alarm
from tests.support.pipeline import Pipeline, faust_ready
from tests.support.stack_helpers import chromium, influx_query, wait_for

FAST_WAIT_S = 4.0
FAST = ["DR-OF-010", "DR-OF-011", "DR-OF-005", "DR-OF-014"]  # escalate every FAST_WAIT_S
GROUP = ["DR-OF-012"]  # paged in the duty room's DingTalk group (next step in 2 minutes)
WEBHOOK_SECRET = "integration-webhook-secret-0123"
SMS_KEY = "integration-sms-key-0123456789"
DAN_PHONE, FAY_PHONE = "13800000041", "13800000042"


@dataclass
class Notifier:
    svc: ServiceProcess
    received: Path
    secret: str
    public_url: str

    def received_all(self) -> list[dict[str, Any]]:
        if not self.received.exists():
            return []
        return [json.loads(line) for line in self.received.read_text().splitlines() if line]

    def messages(self) -> list[dict[str, Any]]:
        """What arrived on the webhook (one person's messages in this file's on-call)."""
        return [m for m in self.received_all() if m["channel"] == "webhook"]

    def group_links(self, facility: str) -> list[str]:
        """Acknowledgement links posted in the DingTalk group for ``facility``."""
        return [url for m in self.received_all() if m["channel"] == "dingtalk"
                and facility in m["body"]["markdown"]["text"]
                for url in re.findall(r"\((http[^)\s]+/ack/[^)\s]+)\)",
                                      m["body"]["markdown"]["text"])]

    def codes_to(self, phone: str) -> list[str]:
        """One-time codes in the SMS sent to ``phone``, in order."""
        return [c for m in self.received_all() if m["channel"] == "sms"
                and m["body"]["to"] == phone and m["problems"] == []
                for c in re.findall(r"code: (\d{6})\b", m["body"]["text"])]

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
    url = f"http://127.0.0.1:{receiver_port}"
    # The webhook stands for one person's own device here (personal: its links need no code);
    # the DingTalk robot posts in a group, whose links need the one-time code by SMS.
    hook = {"id": "hook", "type": "webhook", "url": f"{url}/webhook",
            "secret_env": "TEST_WEBHOOK_SECRET", "personal": True}
    room = {"id": "room", "type": "dingtalk", "url": f"{url}/robot/send",
            "token_env": "TEST_DINGTALK_TOKEN"}
    sms = {"id": "sms", "type": "sms", "url": f"{url}/sms", "token_env": "TEST_SMS_KEY"}
    doc = {
        "people": [{"id": p, "name": p.title()} for p in ("ann", "chief", "boss", "eve")] + [
            {"id": "dan", "name": "Dan", "phone": DAN_PHONE},
            {"id": "fay", "name": "Fay", "phone": FAY_PHONE}],
        "channels": [hook, room, sms],
        "teams": [
            {"id": "fast", "name": "Fast", "layers": [{"name": "l", "members": ["ann"],
                                                      "handover": start, "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": FAST_WAIT_S},
                            {"notify": "person:chief", "channels": ["hook"], "wait_s": FAST_WAIT_S},
                            {"notify": "person:boss", "channels": ["hook"], "wait_s": FAST_WAIT_S}]},
            {"id": "slow", "name": "Slow", "layers": [{"name": "l", "members": ["eve"],
                                                      "handover": start, "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 3600}]},
            {"id": "room", "name": "Duty room", "layers": [
                {"name": "l", "members": ["dan", "fay"], "handover": start, "shift_hours": 24}],
             "escalation": [{"notify": "on_duty", "channels": ["room"], "wait_s": 120},
                            {"notify": "person:chief", "channels": ["hook"],
                             "wait_s": 3600}]},
        ],
        "routes": [{"match": {"facility": FAST}, "team": "fast"},
                   {"match": {"facility": GROUP}, "team": "room"}, {"team": "slow"}],
        "grouping": {"window_s": 2.0, "max_listed": 10},
    }
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def notifier(pipeline: Pipeline, pipeline_env: dict[str, str], stack: Stack,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notifier]:
    d = tmp_path_factory.mktemp("notifier")
    received, port_file = d / "received.jsonl", d / "port"
    rx = spawn([sys.executable, "-m", "tests.support.receivers", "--out", str(received),
                "--port-file", str(port_file), "--webhook-secret", WEBHOOK_SECRET,
                "--sms-key", SMS_KEY],
               log=d / "receiver.log", env=dict(os.environ))
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                        what="receiver port"))
    oncall_file(d / "oncall.yaml", port)
    health, public_port = free_port(), free_port()
    public = f"http://127.0.0.1:{public_port}"  # the acknowledgement page's own port
    env = {**pipeline_env, "LIFELINE_NOTIFIER_ONCALL": str(d / "oncall.yaml"),
           "LIFELINE_NOTIFIER_PUBLIC_PORT": str(public_port),
           "LIFELINE_NOTIFIER_PUBLIC_URL": public, "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5",
           "LIFELINE_NOTIFIER_CODE_RESEND_S": "1",
           "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET, "TEST_SMS_KEY": SMS_KEY,
           "TEST_DINGTALK_TOKEN": "integration-dingtalk-token"}
    svc = ServiceProcess("notifier", env, stack.logs, health)
    svc.start()
    svc.wait_ready(90, ready=faust_ready)
    # The page's own site starts after table recovery, beside the health port.
    wait_for(lambda: status_of(f"{public}/ack/not-a-token") == 403, 30, what="the public page")
    try:
        yield Notifier(svc, received, env["LIFELINE_NOTIFIER_LINK_SECRET"], public)
    finally:
        svc.stop()
        rx.kill()
        rx.wait(5)


def send_raw(stack: Stack, topic: str, key: str, values: list[bytes]) -> None:
    async def go() -> None:
        p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}")
        await p.start()
        try:
            for value in values:
                await p.send_and_wait(topic, value, key=key.encode())
        finally:
            await p.stop()

    asyncio.run(go())


def send_alarms(stack: Stack, events: list[AlarmEvent]) -> None:
    for ev in events:
        send_raw(stack, topics.ALARMS, ev.facility_id, [ev.model_dump_json().encode()])


def http(url: str, data: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(url, data=body, timeout=10) as r:  # noqa: S310 — loopback
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def status_of(url: str) -> int:
    """The page's HTTP status, 0 while nothing listens."""
    try:
        return http(url)[0]
    except OSError:  # URLError: connection refused
        return 0


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


def test_health_port_serves_no_tables_and_no_acknowledgement_page(notifier: Notifier) -> None:
    health = f"http://127.0.0.1:{notifier.svc.health_port}"
    for path in ("/table/", "/table/oncall_state/", "/table/oncall_state/DR-OF-010/",
                 "/router/", "/router/oncall_state/DR-OF-010/", "/"):
        assert http(health + path)[0] == 404, path
    token = Signer(notifier.secret, 86400).sign(AckLink("a", "DR-OF-010", "ann", "n", "fast",
                                                        False))
    assert http(f"{health}/ack/{token}")[0] == 404
    assert http(f"{notifier.public_url}/ack/{token}")[0] == 200
    assert http(f"{notifier.public_url}/health")[0] == 404
    assert http(f"{health}/health")[0] == 200


def test_a_group_link_acknowledges_only_with_the_code_sent_to_the_actor(
        notifier: Notifier, stack: Stack) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    fid = GROUP[0]
    started = datetime.now(UTC)
    ev = alarm(fid=fid, sensor=f"{fid}-L1", level="orange", started=started)
    send_alarms(stack, [ev])
    url = wait_for(lambda: notifier.group_links(fid), 30, what="the page in the group")[0]
    assert url.startswith(f"{notifier.public_url}/ack/")
    # Whoever holds the link cannot acknowledge without a code.
    status, page, headers = http(url, {"action": "acknowledge", "comment": "not me"})
    assert status == 403 and "one-time code is required" in page
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert http(url, {"action": "acknowledge", "challenge": "guess", "code": "123456"})[0] == 403
    driver = chromium()
    try:
        driver.get(url)
        assert fid in driver.page_source
        assert driver.find_elements("id", "send_code") and not driver.find_elements(
            "id", "acknowledge")
        # Fay, Dan's colleague in the group, says who she is: the code goes to her phone.
        driver.find_element("id", "person-fay").click()
        driver.find_element("id", "send_code").click()
        WebDriverWait(driver, 15).until(lambda d: d.find_elements("id", "code_sent"))
        code = wait_for(lambda: notifier.codes_to(FAY_PHONE), 15, what="the code by SMS")[-1]
        assert notifier.codes_to(DAN_PHONE) == [] and code not in driver.page_source
        driver.find_element("id", "code").send_keys(f"{(int(code) + 1) % 1_000_000:06d}")
        driver.find_element("id", "acknowledge").click()
        WebDriverWait(driver, 15).until(lambda d: "Wrong code" in d.page_source)
        driver.find_element("id", "code").send_keys(code)
        driver.find_element("id", "comment").send_keys("fay here 我来处理")
        driver.find_element("id", "acknowledge").click()
        done = WebDriverWait(driver, 15).until(
            lambda d: d.find_elements("id", "done") and d.find_element("id", "done").text)
        assert "Acknowledged" in done or "已确认" in done
    finally:
        driver.quit()
    # Used: no more codes, no second acknowledgement.
    assert http(url, {"action": "send_code", "person": "dan"})[0] == 409
    # The audit trail names the person who proved who she is, and how; the chain stopped.
    acked = wait_for(lambda: [r for r in records(stack, ev.alarm_id)
                              if r["type"] == "acknowledged"], 30, what="the acknowledgement")
    assert [(r["person"], r["channel"], r["detail"]) for r in acked] == [
        ("fay", "link+sms-code", "fay here 我来处理")]
    stopped = wait_for(lambda: [r for r in records(stack, ev.alarm_id)
                                if r["type"] == "stopped"], 30, what="the chain stopped")
    assert [r["detail"] for r in stopped] == ["acknowledged by fay"]
    assert [p for p in notifier.pages_for(fid) if p[0] == "chief"] == []
    log = notifier.svc.tail(2_000_000)  # codes never reach the logs
    assert f"code: {code}" not in log and f'"{code}"' not in log and "oncall.code_sent" in log
    # … and a worse level pages the group again.
    send_alarms(stack, [alarm("escalated", "red", fid=fid, sensor=f"{fid}-L1", started=started,
                              at=datetime.now(UTC))])
    wait_for(lambda: len(notifier.group_links(fid)) >= 2, 30, what="the red page in the group")


def test_forged_acknowledgements_on_kafka_change_nothing(notifier: Notifier,
                                                         stack: Stack) -> None:
    fid = FAST[3]
    ev = alarm(fid=fid, sensor=f"{fid}-L1", level="yellow", started=datetime.now(UTC))
    send_alarms(stack, [ev])
    wait_for(lambda: notifier.pages_for(fid), 30, what="the first page")
    unsigned = AckRequest(alarm_id=ev.alarm_id, facility_id=fid, by="mallory", via="cli",
                          token_id="cli-forged", ts=datetime.now(UTC))
    foreign = AckSigner("not-the-notifier-secret-0123456789").sign(unsigned)
    genuine = AckSigner(notifier.secret).sign(AckRequest(
        alarm_id=ev.alarm_id, facility_id=fid, by="chief", via="cli", token_id="cli-genuine",
        comment="signed", ts=datetime.now(UTC)))
    tampered = json.dumps({**json.loads(genuine.model_dump_json()), "by": "mallory"})
    send_raw(stack, topics.ACKS, fid, [unsigned.model_dump_json().encode(),
                                       foreign.model_dump_json().encode(), tampered.encode(),
                                       b"{not json"])
    # Nobody acknowledged: the chain goes on to the chief, and the agent is alive.
    wait_for(lambda: [p for p in notifier.pages_for(fid) if p[0] == "chief"],
             FAST_WAIT_S * 4 + 20, what="the escalation despite forged acknowledgements")

    def forged() -> list[dict[str, Any]]:
        recs = [r for r in records(stack, ev.alarm_id) if r["type"] == "ignored"]
        return recs if len(recs) >= 3 else []

    ignored = wait_for(forged, 30, what="the forged acknowledgements in the audit trail")
    assert all("not applied" in r["detail"] and f"kafka:{topics.ACKS}[" in r["detail"]
               for r in ignored)
    assert not [r for r in records(stack, ev.alarm_id) if r["type"] == "acknowledged"]
    _, counters = get_json(f"http://127.0.0.1:{notifier.svc.health_port}/counters")
    assert counters["acks_forged"] >= 3 and counters["rejected"] >= 1
    assert "oncall.ack_forged" in notifier.svc.tail(2_000_000)
    # The genuine record, signed with the notifier's key, acknowledges (and stops the chain).
    send_raw(stack, topics.ACKS, fid, [genuine.model_dump_json().encode()])
    acked = wait_for(lambda: [r for r in records(stack, ev.alarm_id)
                              if r["type"] == "acknowledged"], 30, what="the genuine ack")
    assert [(r["person"], r["channel"], r["detail"]) for r in acked] == [
        ("chief", "cli", "signed")]


@pytest.mark.chaos
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
