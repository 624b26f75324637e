"""The notifier reloads its on-call file and the registry while it runs (services.notifier.app,
services.core.reload): the escalator, delivery and the acknowledgement page read the one new
version; a bad file is refused and the old one kept; an alarm nobody is routed to is a
health warning (200, "degraded") that clears when the alarm clears or a reload routes it —
and the reload pages it. Faust's test_context (no broker); pages go over real HTTP to a
receiver in this process."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import yaml
from aiohttp import web
from faust.topics import Topic
from structlog.testing import capture_logs

from schemas.oncall import OnCallRecord, RecordType, load_oncall
from schemas.registry import load_registry
from services.core import topics
from services.core.reload import file_version
from services.notifier.app import Notifier, build, load_checked_oncall
from services.notifier.config import NotifierConfig
from services.notifier.tools import who
from tests.support.oncall_helpers import LINK_SECRET, alarm, put_on

REGISTRY = """
name: reload test
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


def registry_text(**districts: str) -> str:
    return REGISTRY.format(facilities="".join(FACILITY.format(fid=f, district=d)
                                              for f, d in districts.items()))


def oncall_doc(url: str, *, override: str | None = None,
               districts: tuple[str, ...] = ("north",)) -> dict[str, Any]:
    """Ann is on duty in the north; ``override`` puts someone else on duty from an hour
    ago for two hours (an override, as operators write them)."""
    now = datetime.now(UTC)
    team: dict[str, Any] = {
        "id": "duty", "name": "Duty",
        "layers": [{"name": "l", "members": ["ann"], "shift_hours": 24,
                    "handover": (now - timedelta(hours=1)).isoformat()}],
        "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 3600}]}
    if override:
        team["overrides"] = [{"person": override,
                              "starts": (now - timedelta(hours=1)).isoformat(),
                              "ends": (now + timedelta(hours=1)).isoformat()}]
    return {"people": [{"id": p, "name": p.title()} for p in ("ann", "bob")],
            "channels": [{"id": "hook", "type": "webhook", "url": url, "personal": True}],
            "teams": [team],
            "routes": [{"match": {"district": list(districts)}, "team": "duty"}],
            "grouping": {"window_s": 0}}


def write(path: Path, text: str) -> None:
    """As operators and tools write it: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class Receiver:
    """A webhook receiver on a free port: who every page went to, and for which facility."""

    def __init__(self) -> None:
        self.pages: list[tuple[str, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.pages += [(body["person"], a["facility_id"]) for a in body["alarms"]]
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rx.url = f"http://127.0.0.1:{port}/hook"
    yield rx
    await runner.cleanup()


class Files:
    def __init__(self, tmp_path: Path, rx: Receiver) -> None:
        self.oncall, self.registry, self.rx = tmp_path / "oncall.yaml", tmp_path / "reg.yaml", rx

    def write_oncall(self, **kw: Any) -> str:
        write(self.oncall, yaml.safe_dump(oncall_doc(self.rx.url, **kw)))
        return file_version(self.oncall)


def notifier(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: Files) -> Notifier:
    """The notifier as ``main`` builds it: from the files, with their versions."""
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_NOTIFIER_LINK_SECRET", LINK_SECRET)
    monkeypatch.setenv("LIFELINE_NOTIFIER_ONCALL", str(files.oncall))
    monkeypatch.setenv("LIFELINE_REGISTRY", str(files.registry))
    return build(NotifierConfig(), load_checked_oncall(files.oncall),
                 load_registry(files.registry), oncall_version=file_version(files.oncall),
                 registry_version=file_version(files.registry))


class Agent:
    """Records on the notifier's agent, as Kafka would hand them over."""

    def __init__(self, n: Notifier, agent: Any) -> None:
        self.n, self.agent, self.offset = n, agent, 0

    async def put(self, topic: str, key: str, value: bytes) -> None:
        self.offset += 1
        await put_on(self.agent, topic, value, key.encode(), self.offset)

    async def alarm(self, fid: str, sensor: str = "L1", event: str = "raised",
                    level: str | None = "orange") -> None:
        ev = alarm(event, level, fid=fid, sensor=f"{fid}-{sensor}", started=STARTED)
        await self.put(topics.ALARMS, fid, ev.model_dump_json().encode())
        await self.delivered()

    async def tick(self) -> None:
        await self.put(topics.ONCALL_TICKS, "tick", b"{}")
        await self.delivered()

    async def delivered(self) -> None:
        if self.n.delivery is not None:
            await self.n.deliverer.drain(10)


STARTED = datetime.now(UTC).replace(microsecond=0)


def audit(records: list[OnCallRecord]) -> Any:
    async def send(topic: Any, *, key: bytes, value: bytes, **_kw: Any) -> None:
        if topic.get_topic_name() == topics.ONCALL:
            records.append(OnCallRecord.model_validate_json(value))
    return send


def routing(n: Notifier) -> tuple[int, str, str | None]:
    code, body = n.health.payload()
    return code, body["status"], body["warnings"].get("routing")


async def test_an_override_reloaded_pages_the_new_person_everywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    files = Files(tmp_path, receiver)
    first = files.write_oncall()
    write(files.registry, registry_text(**{"F-1": "north"}))
    n = notifier(monkeypatch, tmp_path, files)
    [oncall_file, _registry_file] = n.files
    assert n.health.payload()[1]["config"]["oncall"]["version"] == first
    records: list[OnCallRecord] = []
    with patch.object(Topic, "send", autospec=True, side_effect=audit(records)):
        async with n.agent.test_context() as ctx:
            a = Agent(n, ctx)
            await a.alarm("F-1", "L1")
            assert receiver.pages == [("ann", "F-1")]
            old = n.deliverer.cfg

            second = files.write_oncall(override="bob")
            with capture_logs() as logs:
                assert oncall_file.check()
            # The new file's own warnings are said again (valid but unsafe, not refused).
            assert [e["event"] for e in logs] == ["oncall.config_warning", "oncall.reloaded"]
            assert logs[1]["version"] == second and logs[1]["previous"] == first
            assert n.health.payload()[1]["config"]["oncall"]["version"] == second
            assert n.page is not None
            new = n.escalator.cfg
            assert new is not old and new.team("duty").overrides
            assert n.deliverer.cfg is new and n.page.cfg is new  # one reference, no copies
            await a.tick()  # the reconciliation of the saved state: nothing to change here
            await a.alarm("F-1", "L2")
            assert receiver.pages == [("ann", "F-1"), ("bob", "F-1")]
    # `lifeline oncall who` on the same file names the person the notifier paged.
    rows = who(load_oncall(files.oncall), datetime.now(UTC), version=file_version(files.oncall))
    assert [(r["team"], r["on_duty"], r["first_page"], r["version"]) for r in rows] == [
        ("duty", "bob", "bob", second)]


async def test_a_bad_file_is_refused_and_the_old_one_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    files = Files(tmp_path, receiver)
    first = files.write_oncall()
    write(files.registry, registry_text(**{"F-1": "north"}))
    n = notifier(monkeypatch, tmp_path, files)
    [oncall_file, registry_file] = n.files
    kept = n.escalator.cfg
    bad = oncall_doc(receiver.url, override="zed")  # nobody called zed in the file
    write(files.oncall, yaml.safe_dump(bad))
    with capture_logs() as logs:
        assert not oncall_file.check()
    [refused] = [e for e in logs if e["event"] == "oncall.reload_refused"]
    assert refused["keeping"] == first and "zed" in refused["error"]
    code, body = n.health.payload()
    assert (code, body["status"]) == (200, "degraded")  # the page stays in service
    assert "refused, keeping version " + first in body["warnings"]["oncall"]
    assert body["config"]["oncall"]["version"] == first
    assert body["config"]["oncall"]["refused"] == file_version(files.oncall)
    assert n.escalator.cfg is kept and body["counters"]["oncall_reloads_refused"] == 1

    # A new channel must pass the start-up secret check, or the file is refused.
    monkeypatch.setenv("TEST_NEW_HOOK_SECRET", "changeme")
    doc = oncall_doc(receiver.url)
    doc["channels"].append({"id": "hook2", "type": "webhook", "url": receiver.url,
                            "secret_env": "TEST_NEW_HOOK_SECRET"})
    write(files.oncall, yaml.safe_dump(doc))
    assert not oncall_file.check()
    assert "TEST_NEW_HOOK_SECRET (channel hook2)" in n.health.warnings()["oncall"]
    assert n.escalator.cfg is kept

    good = files.write_oncall(override="bob")
    assert oncall_file.check()
    assert "oncall" not in n.health.warnings() and n.health.payload()[1]["status"] == "ok"
    assert n.health.payload()[1]["config"]["oncall"]["version"] == good
    assert "refused" not in n.health.payload()[1]["config"]["oncall"]

    # The registry: a broken file is refused the same way, the districts kept.
    write(files.registry, registry_text(**{"F-1": "north"}).replace("water_level", "nonsense"))
    assert not registry_file.check()
    assert "registry" in n.health.warnings() and n.escalator.districts == {"F-1": "north"}
    write(files.registry, registry_text(**{"F-1": "south"}))
    assert registry_file.check()
    assert "registry" not in n.health.warnings() and n.escalator.districts == {"F-1": "south"}


async def test_an_unrouted_alarm_warns_until_a_reload_routes_it_and_pages_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    files = Files(tmp_path, receiver)
    files.write_oncall()
    write(files.registry, registry_text(**{"F-1": "north", "F-2": "south"}))
    n = notifier(monkeypatch, tmp_path, files)
    [oncall_file, registry_file] = n.files
    records: list[OnCallRecord] = []
    with patch.object(Topic, "send", autospec=True, side_effect=audit(records)):
        async with n.agent.test_context() as ctx:
            a = Agent(n, ctx)
            await a.alarm("F-2")
            assert [r.type for r in records] == [RecordType.UNROUTED]
            code, status, text = routing(n)
            assert (code, status) == (200, "degraded") and text is not None
            assert text.startswith("1 active alarm(s) nobody is routed to: F-2 (district "
                                   "south, orange)")
            await a.tick()
            await a.alarm("F-2", event="escalated", level="red")
            assert receiver.pages == [] and routing(n)[2] is not None  # still nobody

            # An alarm of a facility the registry does not have yet: district "unknown".
            await a.alarm("F-3")
            assert "F-3 (district unknown, orange)" in (routing(n)[2] or "")
            assert n.health.payload()[0] == 200

            files.write_oncall(districts=("north", "south"))
            assert oncall_file.check()
            assert routing(n)[2] is not None  # routed at the next tick, inside the agent
            await a.tick()
            assert receiver.pages == [("ann", "F-2")]
            routed = [r for r in records if r.type is RecordType.ESCALATED]
            assert [(r.facility_id, r.team) for r in routed] == [("F-2", "duty")]
            assert "F-2" not in (routing(n)[2] or "") and "F-3" in (routing(n)[2] or "")

            # The registry puts F-3 in the north: routed and paged, the warning gone.
            write(files.registry, registry_text(**{"F-1": "north", "F-2": "south",
                                                   "F-3": "north"}))
            assert await registry_file.check_async()
            await a.tick()
            assert receiver.pages == [("ann", "F-2"), ("ann", "F-3")]
            assert routing(n) == (200, "ok", None)
            assert n.cache["F-3"].episodes[next(iter(n.cache["F-3"].episodes))].alarm[
                "district"] == "north"
            await a.tick()
            assert len(receiver.pages) == 2  # paged once


async def test_the_routing_warning_clears_when_the_alarm_clears(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    files = Files(tmp_path, receiver)
    files.write_oncall()
    write(files.registry, registry_text(**{"F-1": "north", "F-2": "south"}))
    n = notifier(monkeypatch, tmp_path, files)
    records: list[OnCallRecord] = []
    with patch.object(Topic, "send", autospec=True, side_effect=audit(records)):
        async with n.agent.test_context() as ctx:
            a = Agent(n, ctx)
            await a.alarm("F-2", "L1")
            await a.alarm("F-2", "L2")
            text = routing(n)[2] or ""
            assert text.startswith("2 active alarm(s)") and text.count("F-2") == 2
            await a.alarm("F-2", "L1", event="cleared", level=None)
            assert (routing(n)[2] or "").startswith("1 active alarm(s)")
            await a.alarm("F-2", "L2", event="cleared", level=None)
            assert routing(n) == (200, "ok", None)
            assert n.cache["F-2"].episodes == {} and len(n.cache["F-2"].closed) == 2
            # Closed: a redelivered raise of the same alarm warns nobody again.
            await a.alarm("F-2", "L1")
            assert routing(n) == (200, "ok", None)
    assert receiver.pages == []
    assert json.loads(json.dumps(n.health.payload()[1]))["warnings"] == {}
