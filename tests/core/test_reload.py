"""Configuration files reloaded when they change (services/core/reload.py), and the services
that use it: ingest's validator, the writer's points and baseline, the processor's engine."""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from schemas.registry import Registry, RegistryError, load_registry
from services.core.health import Counters, Health
from services.core.reload import WatchedFile, digest, file_version
from tests.support.paths import EXAMPLE_REGISTRY

NEW = {"id": "DR-NEW-001", "kind": "drainage", "name": "New manhole", "name_zh": "新检查井",
       "district": "Binhai Park", "lat": 27.9, "lon": 120.9,
       "sensors": [{"id": "DR-NEW-001-L1", "metric": "water_level", "unit": "m",
                    "range": [0, 7], "interval_s": 60,
                    "rules": [{"levels": [{"level": "blue", "raise_at": 1.5,
                                           "source": "test level"}]}]}]}
NEW_SEWAGE = {"id": "SW-NEW-001", "kind": "sewage", "name": "New pumping well",
              "district": "Binhai Park", "lat": 27.9, "lon": 120.9,
              "sensors": [{"id": "SW-NEW-001-Q1", "metric": "flow", "unit": "L/s",
                           "range": [0, 500], "interval_s": 60}]}


def _base() -> dict[str, Any]:
    """The example registry cut to a few facilities (quick to load): its first drainage
    facility and two sewage ones."""
    doc = yaml.safe_load(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
    facilities = doc["facilities"]
    doc["facilities"] = ([f for f in facilities if f["kind"] == "drainage"][:1]
                         + [f for f in facilities if f["kind"] == "sewage"][:2])
    return dict(doc)


BASE = _base()


def registry_text(*extra: dict[str, Any]) -> str:
    doc = copy.deepcopy(BASE)
    doc["facilities"].extend(copy.deepcopy(list(extra)))
    return yaml.safe_dump(doc, allow_unicode=True)


def bad_rule_text() -> str:
    broken = copy.deepcopy(NEW)
    broken["sensors"][0]["rules"][0]["levels"][0]["level"] = "purple"
    return registry_text(broken)


def replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` as operators and tools do: a new file renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class Watch:
    def __init__(self, path: Path) -> None:
        self.health = Health("test", Counters())
        self.applied: list[Registry] = []
        self.file = WatchedFile("registry", path, load_registry, self.applied.append,
                                self.health)


@pytest.fixture
def reg_file(tmp_path: Path) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(registry_text(), encoding="utf-8")
    return path


def test_a_changed_file_is_loaded_and_reported(reg_file: Path) -> None:
    w = Watch(reg_file)
    old = file_version(reg_file)
    assert w.file.version == old == digest(reg_file.read_bytes()) and len(old) == 12
    assert w.file.check() is False and w.applied == []  # unchanged: nothing reloaded
    replace(reg_file, registry_text(NEW))
    with capture_logs() as logs:
        assert w.file.check() is True
    [new] = w.applied
    assert new.facility("DR-NEW-001") is not None
    assert w.file.version == file_version(reg_file) != old
    assert [(e["event"], e["version"], e["previous"]) for e in logs] == [
        ("registry.reloaded", w.file.version, old)]
    code, body = w.health.payload()
    assert code == 200 and body["status"] == "ok"
    assert body["config"]["registry"] == {"path": str(reg_file), "version": w.file.version,
                                          "loaded_at": round(w.file.loaded_at, 3)}
    assert body["counters"]["registry_reloads"] == 1
    assert body["counters"]["registry_reloads_refused"] == 0
    assert w.file.check() is False and len(w.applied) == 1  # once per version


@pytest.mark.parametrize("bad", ["facilities: [\n", "rule"], ids=["yaml", "rule"])
def test_a_bad_file_is_refused_the_old_one_kept_until_a_good_one(reg_file: Path,
                                                                 bad: str) -> None:
    w = Watch(reg_file)
    good = w.file.version
    text = bad if bad != "rule" else bad_rule_text()
    replace(reg_file, text)
    with pytest.raises(RegistryError):  # the loader refuses it (the same check as at start)
        load_registry(reg_file)
    with capture_logs() as logs:
        assert w.file.check() is False
        assert w.file.check() is False  # one refusal per version, not one per check
    assert w.applied == [] and w.file.version == good
    refused = file_version(reg_file)
    [line] = logs
    assert line["event"] == "registry.reload_refused" and line["log_level"] == "error"
    assert line["version"] == refused and line["keeping"] == good
    assert "registry" in line["error"] and line["path"] == str(reg_file)
    code, body = w.health.payload()
    # The service goes on with the version it has: degraded, not unready.
    assert code == 200 and body["status"] == "degraded" and body["problems"] == {}
    assert f"version {refused}) refused, keeping version {good}" in body["warnings"]["registry"]
    assert body["config"]["registry"]["version"] == good
    assert body["config"]["registry"]["refused"] == refused
    assert body["counters"]["registry_reloads_refused"] == 1
    replace(reg_file, registry_text(NEW))
    assert w.file.check() is True
    code, body = w.health.payload()
    assert code == 200 and body["status"] == "ok" and body["warnings"] == {}
    assert "refused" not in body["config"]["registry"]


def test_putting_back_the_file_in_use_clears_the_refusal(reg_file: Path) -> None:
    w = Watch(reg_file)
    original = reg_file.read_text(encoding="utf-8")
    replace(reg_file, "facilities: [\n")
    assert w.file.check() is False and "registry" in w.health.warnings()
    replace(reg_file, original)
    assert w.file.check() is False and w.applied == []  # the same version: nothing to load
    assert w.health.warnings() == {} and w.file.refused is None


def test_an_exception_in_on_change_refuses_the_version(reg_file: Path) -> None:
    health = Health("test", Counters())

    def refuse(_: Registry) -> None:
        raise ValueError("cannot use it")

    f = WatchedFile("registry", reg_file, load_registry, refuse, health)
    before = f.version
    replace(reg_file, registry_text(NEW))
    assert f.check() is False and f.version == before
    assert "cannot use it" in health.warnings()["registry"]
    assert health.counters.get("registry_reloads_refused") == 1


def test_kubernetes_configmap_symlink_swap_is_seen(tmp_path: Path) -> None:
    """A ConfigMap volume: registry.yaml -> ..data/registry.yaml, ..data -> ..<timestamp>;
    an update writes a new timestamped folder and swaps ..data atomically."""
    first = tmp_path / "..2026_12_01_10_00_00.1"
    first.mkdir()
    (first / "registry.yaml").write_text(registry_text(), encoding="utf-8")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "registry.yaml").symlink_to("..data/registry.yaml")
    w = Watch(tmp_path / "registry.yaml")
    assert w.file.check() is False
    second = tmp_path / "..2026_12_01_10_01_00.2"
    second.mkdir()
    (second / "registry.yaml").write_text(registry_text(NEW), encoding="utf-8")
    (tmp_path / "..data_tmp").symlink_to(second.name)
    (tmp_path / "..data_tmp").replace(tmp_path / "..data")
    assert w.file.check() is True
    assert w.applied[0].facility("DR-NEW-001") is not None
    assert w.file.version == file_version(second / "registry.yaml")


def test_a_rewrite_of_the_same_size_and_time_is_seen(reg_file: Path) -> None:
    """Another inode is another file, even with the same size and modification time."""
    w = Watch(reg_file)
    assert w.file.check() is False  # the file as it is now has been looked at
    text = reg_file.read_text(encoding="utf-8")
    edited = text.replace("Binhai Park manhole 1", "Binhai Park manhole I", 1)
    assert len(edited) == len(text) and edited != text
    st = reg_file.stat()
    tmp = reg_file.with_name("registry.yaml.tmp")
    tmp.write_text(edited, encoding="utf-8")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    tmp.replace(reg_file)
    assert w.file.check() is True
    assert w.applied[0].facility("DR-BH-001").name == "Binhai Park manhole I"  # type: ignore[union-attr]


def test_a_file_changed_before_the_watcher_started_is_loaded(reg_file: Path) -> None:
    """The service loaded version A, the file became B before the watcher was made: the
    first check loads B even though the file's stat has not moved since."""
    version_a = file_version(reg_file)
    replace(reg_file, registry_text(NEW))
    health = Health("test", Counters())
    applied: list[Registry] = []
    f = WatchedFile("registry", reg_file, load_registry, applied.append, health,
                    version=version_a)
    assert f.check() is True and f.version == file_version(reg_file)
    assert applied[0].facility("DR-NEW-001") is not None


async def test_check_async_loads_in_a_thread_and_applies_on_the_loop(reg_file: Path) -> None:
    loop_thread = threading.get_ident()
    where: dict[str, int] = {}

    def loader(path: Path) -> Registry:
        where["load"] = threading.get_ident()
        return load_registry(path)

    def apply(_: Registry) -> None:
        where["apply"] = threading.get_ident()

    health = Health("test", Counters())
    f = WatchedFile("registry", reg_file, loader, apply, health)
    replace(reg_file, registry_text(NEW))
    assert await f.check_async() is True
    assert where["apply"] == loop_thread != where["load"]


async def test_watch_checks_until_cancelled(reg_file: Path) -> None:
    w = Watch(reg_file)
    task = asyncio.create_task(w.file.watch(0.01))
    replace(reg_file, registry_text(NEW))
    for _ in range(500):
        if w.applied:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert len(w.applied) == 1


# ------------------------------------------------------------------ the services
async def test_ingest_accepts_a_new_facility_and_keeps_gateway_state(
        reg_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from services.ingest.app import Ingest
    from services.ingest.config import IngestConfig

    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_REGISTRY", str(reg_file))
    svc = Ingest(IngestConfig(), load_registry(reg_file), file_version(reg_file))
    svc.handler.validator.fast = False
    now = datetime.now(UTC)
    payload = (b'{"ts": "%s", "seq": 1, "readings": [{"sensor": "DR-NEW-001-L1", '
               b'"metric": "water_level", "value": 1.0, "unit": "m"}]}'
               % now.isoformat().encode())

    def outcome(fid: str) -> Any:
        return svc.handler.judge(f"lifeline/drainage/{fid}/telemetry", payload.replace(
            b"DR-NEW-001", fid.encode()), False, 1, now, 0.0)

    before = outcome("DR-NEW-001")
    assert before.batch_json is None and before.dead_letter.reason == "unknown_facility"
    outcome("DR-BH-001")  # a known gateway's rate-limit state
    policy = svc.handler.policy
    live = dict(policy.live._buckets)
    assert live["DR-BH-001"][0] == policy.live.burst - 1  # one token spent
    replace(reg_file, registry_text(NEW))
    assert await svc.registry_file.check_async() is True
    after = outcome("DR-NEW-001")
    assert after.dead_letter is None and after.batch_json is not None
    assert svc.handler.validator.fast is False  # the validator's own settings carried over
    # The gateways' limiter state is kept: DR-BH-001's bucket as it was, the new one added.
    assert svc.handler.policy is policy and svc.handler.policy.live._buckets["DR-BH-001"] == live["DR-BH-001"]
    assert svc.handler.policy.live._buckets["DR-NEW-001"][0] == policy.live.burst - 1
    _code, body = svc.health.payload()
    assert body["config"]["registry"]["version"] == file_version(reg_file)


def load_doc(doc: dict[str, Any], tmp_path: Path) -> Registry:
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return load_registry(path)


def test_writer_baseline_keeps_what_it_learned_and_watches_new_sensors(tmp_path: Path) -> None:
    from services.writer.baseline import DiurnalBaseline

    old = load_doc(yaml.safe_load(registry_text()), tmp_path)
    b = DiurnalBaseline(old, warmup_h=0)
    key = next(iter(b.sensors))
    t = int(datetime(2026, 12, 1, 2, tzinfo=UTC).timestamp() * 1000)
    b.update(*key, t, 10.0)
    learned = list(b.profiles[key])
    doc = yaml.safe_load(registry_text(NEW_SEWAGE))
    gone = next(f for f in doc["facilities"] if f["id"] == key[0])
    doc["facilities"].remove(gone)
    other = next(k for k in b.sensors if k[0] != key[0])
    b.update(*other, t, 5.0)
    b.use_registry(load_doc(doc, tmp_path))
    assert b.watches("SW-NEW-001", "SW-NEW-001-Q1")
    assert not b.watches(*key) and key not in b.profiles  # its facility was removed
    assert b.profiles[other][datetime.fromtimestamp(t / 1000, b.zone).hour] == 5.0
    assert learned[datetime.fromtimestamp(t / 1000, b.zone).hour] == 10.0


def test_writer_points_use_the_new_registry(tmp_path: Path) -> None:
    from services.writer.points import PointBuilder

    points = PointBuilder(load_doc(yaml.safe_load(registry_text()), tmp_path))
    before = set(points.facilities())
    doc = yaml.safe_load(registry_text(NEW))
    points.registry = load_doc(doc, tmp_path)
    added = [line for line in points.facilities() if line not in before]
    assert len(added) == 1 and added[0].startswith("facility,district=Binhai\\ Park,"
                                                   "facility=DR-NEW-001,kind=drainage ")


async def test_processor_unreadable_state_is_a_warning_that_expires(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A saved state this release cannot read: the facility starts afresh and /health says
    so for a while (an event), without failing readiness."""
    import time
    from unittest.mock import patch

    from schemas.reading import Reading, ReadingBatch
    from services.processor import app as processor_app
    from services.processor.config import ProcessorConfig
    from tests.support.engine_helpers import lv, make_registry, sensor

    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    proc = processor_app.build(ProcessorConfig(), make_registry(
        sensor("L", "water_level", {"levels": [lv("blue", 1.8, 1.7)]}, rng=(0, 7))))
    proc.state.data["F-1"] = '{"v": 99}'
    ts = datetime.now(UTC)
    value = ReadingBatch(facility_id="F-1", kind="drainage", seq=1, received_at=ts, readings=[
        Reading(sensor="L", metric="water_level", value=1.0, unit="m", ts=ts)]
    ).model_dump_json().encode()
    with patch.object(proc.alarms, "send"):
        async with proc.agent.test_context() as agent:
            await agent.put(value, key=b"F-1")
    code, body = proc.health.payload()
    assert code == 200 and body["status"] == "degraded" and body["problems"] == {}
    assert body["warnings"]["state:F-1"].startswith("saved state unreadable, started fresh")
    assert proc.health.counters.get("state_unreadable") == 1
    later = time.time() + processor_app.STATE_WARNING_TTL_S + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert proc.health.warnings() == {}
