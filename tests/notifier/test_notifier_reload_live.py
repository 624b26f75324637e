"""The notifier process reloads its on-call file and the registry while it runs: alarm events on
Tansu → the notifier → a local receiver. An override written into the file pages the new
person (and `lifeline oncall who` names the same one); a bad file is refused (logged, a
warning, the version kept) until a good one; an alarm nobody is routed to keeps /health at
200 "degraded" with a warning that clears — and the alarm is paged — once a reloaded on-call
file or registry routes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core.reload import file_version
from services.stack.manager import Ports, Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess, get_json
from tests.notifier.test_notifier import WEBHOOK_SECRET, send_alarms
from tests.support.oncall_helpers import alarm
from tests.support.pipeline import faust_ready
from tests.support.stack_helpers import wait_for

# A stack of its own (its `stack` fixture).
pytestmark = pytest.mark.integration

NORTH, SOUTH, LATE = "TEST-NR-1", "TEST-NR-2", "TEST-NR-3"  # LATE: added to the registry later
REGISTRY = """
name: notifier reload test
facilities:
{facilities}
"""
FACILITY = """  - id: {fid}
    kind: drainage
    name: {fid}
    district: {district}
    lat: 27.9
    lon: 120.8
    sensors:
      - {{id: {fid}-L1, metric: water_level, unit: m, range: [0, 7], interval_s: 60}}
"""


def write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # as operators' tools write it: never half a file


def registry_text(**districts: str) -> str:
    return REGISTRY.format(facilities="".join(FACILITY.format(fid=f, district=d)
                                              for f, d in districts.items()))


def oncall_text(url: str, *, override: str | None = None,
                districts: tuple[str, ...] = ("nr-north",), bad: bool = False) -> str:
    now = datetime.now(UTC)
    team: dict[str, Any] = {
        "id": "north", "name": "North duty",
        "layers": [{"name": "l", "members": ["pat"], "shift_hours": 24,
                    "handover": (now - timedelta(hours=1)).isoformat()}],
        "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 3600}]}
    if override:
        team["overrides"] = [{"person": override, "starts": (now - timedelta(hours=1)).isoformat(),
                              "ends": (now + timedelta(hours=2)).isoformat()}]
    doc: dict[str, Any] = {"people": [{"id": p, "name": p.title()} for p in ("pat", "quinn")],
           "channels": [{"id": "hook", "type": "webhook", "url": f"{url}/webhook",
                         "secret_env": "TEST_WEBHOOK_SECRET", "personal": True}],
           "teams": [team],
           "routes": [{"match": {"district": list(districts)}, "team": "north"}],
           "grouping": {"window_s": 0}}
    if bad:
        doc["routes"].append({"team": "nobody-team"})  # a route to a team the file lacks
    return yaml.safe_dump(doc)


@dataclass
class Running:
    svc: ServiceProcess
    received: Path
    oncall: Path
    registry: Path
    url: str

    def health(self) -> tuple[int, dict[str, Any]]:
        code, body = get_json(f"http://127.0.0.1:{self.svc.health_port}/health")
        assert isinstance(body, dict), body
        return code, body

    def pages(self) -> list[tuple[str, str]]:
        """(person, facility) of every alarm paged on the webhook, in order."""
        if not self.received.exists():
            return []
        out = []
        for line in self.received.read_text().splitlines():
            m = json.loads(line)
            if m["channel"] == "webhook":
                assert m["problems"] == [], m["problems"]  # signed as documented
                out += [(m["body"]["person"], a["facility_id"]) for a in m["body"]["alarms"]
                        if a["notification"] == "page"]
        return out

    def wait_version(self, name: str, version: str) -> dict[str, Any]:
        def running() -> dict[str, Any]:
            body = self.health()[1]
            return body if body["config"][name]["version"] == version else {}
        return wait_for(running, 20, what=f"{name} version {version} in use")

    def logged(self, event: str) -> list[dict[str, Any]]:
        out = []
        for line in self.svc.log.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == event:
                out.append(rec)
        return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: on the session's, other modules' alarms (of facilities this
    module's files do not route) would keep a routing warning up and crowd its text."""
    s = Stack(tmp_path_factory.mktemp("notifier-reload-stack"), Ports.free())
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="module")
def notifier(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    d = tmp_path_factory.mktemp("notifier-reload")
    received, port_file = d / "received.jsonl", d / "port"
    rx = spawn([sys.executable, "-m", "tests.support.receivers", "--out", str(received),
                "--port-file", str(port_file), "--webhook-secret", WEBHOOK_SECRET],
               log=d / "receiver.log", env=dict(os.environ))
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                        what="receiver port"))
    url = f"http://127.0.0.1:{port}"
    oncall, registry = d / "oncall.yaml", d / "registry.yaml"
    write(oncall, oncall_text(url))
    write(registry, registry_text(**{NORTH: "nr-north", SOUTH: "nr-south"}))
    env = {**stack.env(), "LIFELINE_REGISTRY": str(registry), "LIFELINE_HEALTH_REPORT_S": "2",
           "LIFELINE_NOTIFIER_ONCALL": str(oncall), "LIFELINE_RELOAD_CHECK_S": "0.5",
           "LIFELINE_NOTIFIER_PUBLIC_PORT": str(free_port()),
           "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5",
           "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    svc = ServiceProcess("notifier", env, stack.logs, free_port(), instance="-reload")
    svc.start()
    svc.wait_ready(90, ready=faust_ready)
    try:
        yield Running(svc, received, oncall, registry, url)
    finally:
        svc.stop()
        rx.kill()
        rx.wait(5)


def who(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "services.cli", "oncall", "who", "--oncall",
                          str(path)], capture_output=True, text=True, timeout=60, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def test_an_override_pages_the_new_person_and_a_bad_file_is_refused(
        notifier: Running, stack: Stack) -> None:
    started = datetime.now(UTC)
    first = file_version(notifier.oncall)
    assert notifier.health()[1]["config"]["oncall"]["version"] == first
    send_alarms(stack, [alarm(fid=NORTH, sensor=f"{NORTH}-L1", level="orange", started=started)])
    wait_for(lambda: notifier.pages() == [("pat", NORTH)] or None, 30, what="pat paged")

    write(notifier.oncall, oncall_text(notifier.url, override="quinn"))
    second = file_version(notifier.oncall)
    body = notifier.wait_version("oncall", second)
    assert body["status"] == "ok" and body["counters"]["oncall_reloads"] == 1
    [row] = who(notifier.oncall)
    assert (row["on_duty"], row["first_page"], row["version"]) == ("quinn", "quinn", second)
    send_alarms(stack, [alarm(fid=NORTH, sensor=f"{NORTH}-L2", level="orange", started=started)])
    wait_for(lambda: len(notifier.pages()) == 2 or None, 30, what="the second page")
    assert notifier.pages() == [("pat", NORTH), ("quinn", NORTH)]

    # A bad file: refused, said in the log and on /health (200: the page stays in service).
    write(notifier.oncall, oncall_text(notifier.url, override="quinn", bad=True))
    refused_version = file_version(notifier.oncall)
    wait_for(lambda: notifier.logged("oncall.reload_refused") or None, 20, what="refusal")
    [refused] = notifier.logged("oncall.reload_refused")
    assert refused["version"] == refused_version and refused["keeping"] == second
    assert "nobody-team" in refused["error"]
    code, body = notifier.health()
    assert (code, body["status"]) == (200, "degraded")
    assert f"refused, keeping version {second}" in body["warnings"]["oncall"]
    assert body["config"]["oncall"]["version"] == second
    assert body["config"]["oncall"]["refused"] == refused_version

    write(notifier.oncall, oncall_text(notifier.url, override="quinn", districts=("nr-north",
                                                                                   "nr-east")))
    body = notifier.wait_version("oncall", file_version(notifier.oncall))
    assert "oncall" not in body["warnings"] and body["status"] == "ok"


def test_an_unrouted_alarm_warns_until_reloads_route_it(notifier: Running, stack: Stack) -> None:
    started = datetime.now(UTC)
    before = len(notifier.pages())
    send_alarms(stack, [alarm(fid=SOUTH, sensor=f"{SOUTH}-L1", level="yellow", started=started),
                        alarm(fid=LATE, sensor=f"{LATE}-L1", level="yellow", started=started)])

    def warning() -> str | None:
        code, body = notifier.health()
        assert code == 200, body  # never 503 for an unrouted alarm
        text: str | None = body["warnings"].get("routing")
        return text

    text = wait_for(lambda: (w := warning()) is not None and LATE in w and w, 30,
                    what="routing warning")
    assert isinstance(text, str)
    assert text.startswith("2 active alarm(s) nobody is routed to: ")
    assert f"{SOUTH} (district nr-south, yellow)" in text
    assert f"{LATE} (district unknown, yellow)" in text
    assert notifier.health()[1]["status"] == "degraded"

    # The on-call file now routes the south: that alarm is paged, the other still warned of.
    write(notifier.oncall, oncall_text(notifier.url, override="quinn",
                                       districts=("nr-north", "nr-south")))
    notifier.wait_version("oncall", file_version(notifier.oncall))
    wait_for(lambda: (SOUTH not in (warning() or "")) or None, 20, what="south routed")
    assert (warning() or "").startswith(f"1 active alarm(s) nobody is routed to: {LATE} ")
    wait_for(lambda: ("quinn", SOUTH) in notifier.pages()[before:] or None, 20,
             what="the south alarm paged")

    # A broken registry is refused (the districts kept); one that has the facility routes it.
    write(notifier.registry, registry_text(**{NORTH: "nr-north"}).replace("interval_s: 60",
                                                                          "interval_s: -1"))
    wait_for(lambda: "registry" in notifier.health()[1]["warnings"] or None, 20,
             what="registry refused")
    write(notifier.registry, registry_text(**{NORTH: "nr-north", SOUTH: "nr-south",
                                              LATE: "nr-north"}))
    body = notifier.wait_version("registry", file_version(notifier.registry))
    assert "registry" not in body["warnings"]
    wait_for(lambda: warning() is None or None, 20, what="the routing warning cleared")
    wait_for(lambda: ("quinn", LATE) in notifier.pages()[before:] or None, 20,
             what="the late facility's alarm paged")
    assert notifier.health()[1]["status"] == "ok"
    assert sorted(notifier.pages()[before:]) == [("quinn", SOUTH), ("quinn", LATE)]
