"""Adding a facility without a restart (issue 20): the registry file is rewritten while
ingest, processor and writer run; every one of them reloads it (``/health`` names the
version each runs), and the new facility's reports are accepted, evaluated, stored and on
the map. A bad file is refused by every service, which keeps the version it has and says
so; a good one clears that.

Runs on a stack of its own: the local broker ties client ids to usernames, so a second
ingest beside the session's pipeline would take its MQTT session over."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core import topics
from services.core.reload import file_version
from services.stack.manager import Ports, Stack, check_dependencies
from simulators.publisher import Publisher
from tests.support.pipeline import Pipeline, running_pipeline, write_registry
from tests.support.stack_helpers import influx_count, influx_query, now_ms, report, topic_records, wait_for

# A stack of its own (its `stack` fixture).
pytestmark = pytest.mark.integration

FID = "DR-ADD-001"
TOPIC = f"lifeline/drainage/{FID}/telemetry"
SENSOR = f"{FID}-L1"
SERVICES = ("ingest", "processor", "writer")


def new_facility(name: str = "Added manhole") -> dict[str, Any]:
    return {"id": FID, "kind": "drainage", "name": name, "name_zh": "新增检查井",
            "district": "test-add", "lat": 27.95, "lon": 120.85,
            "sensors": [{"id": SENSOR, "metric": "water_level", "unit": "m", "range": [0, 7],
                         "interval_s": 3600,
                         "rules": [{"levels": [{"level": "blue", "raise_at": 2.0,
                                                "source": "test level"}]}]}]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = check_dependencies()
    if missing:
        pytest.fail("local stack not installed (run scripts/bootstrap.sh): " + "; ".join(missing))
    s = Stack(tmp_path_factory.mktemp("add-facility-stack"), Ports.free())
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="module")
def registry_path(stack: Stack) -> Path:
    path = stack.state / "registry.yaml"
    write_registry(path, [])  # the example registry: the new facility is not in it
    return path


@pytest.fixture(scope="module")
def pipeline(stack: Stack, registry_path: Path) -> Iterator[Pipeline]:
    env = {**stack.env(), "LIFELINE_REGISTRY": str(registry_path),
           "LIFELINE_RELOAD_CHECK_S": "1",
           "LIFELINE_WRITER_BATCH_SECONDS": "0.2", "LIFELINE_WRITER_RETRY_MAX_S": "1",
           "LIFELINE_PROCESSOR_TICK_INTERVAL_S": "1", "LIFELINE_HEALTH_REPORT_S": "2"}
    with running_pipeline(stack, env) as p:
        yield p


def registry_state(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Each service's /health: its registry version (and refusal) and its warnings."""
    out = {}
    for name in SERVICES:
        code, body = pipeline.services[name].health()
        out[name] = {"code": code, **(body or {}).get("config", {}).get("registry", {}),
                     "warning": (body or {}).get("warnings", {}).get("registry")}
    return out


def all_run(pipeline: Pipeline, version: str) -> dict[str, dict[str, Any]] | None:
    state = registry_state(pipeline)
    return state if all(s.get("version") == version for s in state.values()) else None


def logged(pipeline: Pipeline, name: str, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in pipeline.services[name].log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("event") == event:
            lines.append(rec)
    return lines


def publish(publisher: Publisher, seq: int, ts_ms: int, value: float) -> None:
    publisher.publish(TOPIC, report(seq, ts_ms, [(SENSOR, "water_level", value, "m")]))


def facility_point(stack: Stack) -> list[Any]:
    series = influx_query(stack, 'SELECT "name", "lat", "lon", "sensors" FROM "long"."facility" '
                                 f"WHERE \"facility\" = '{FID}'")
    return list(series[0]["values"]) if series else []


def test_a_new_facility_reaches_every_service_without_a_restart(
        pipeline: Pipeline, publisher: Publisher, registry_path: Path, stack: Stack) -> None:
    started = {n: pipeline.services[n].proc.pid for n in SERVICES}  # type: ignore[union-attr]
    first = file_version(registry_path)
    assert all_run(pipeline, first), registry_state(pipeline)
    t0 = now_ms() - 300_000

    # Not in the registry yet: dead-lettered by ingest.
    publish(publisher, 1, t0, 1.0)

    def unknown() -> list[dict[str, Any]]:
        return [d for d in topic_records(stack, topics.READINGS_DLQ)
                if d["source"] == f"mqtt:{TOPIC}"]

    [dl] = wait_for(unknown, timeout=30, what="the unknown facility dead-lettered")
    assert dl["reason"] == "unknown_facility" and FID in dl["detail"]

    # Added: every service takes the new file.
    write_registry(registry_path, [new_facility()])
    added = file_version(registry_path)
    assert added != first
    state = wait_for(lambda: all_run(pipeline, added), timeout=45,
                     what=f"every service on registry version {added}")
    assert all(s["code"] == 200 and s["warning"] is None for s in state.values()), state
    for name in SERVICES:
        [line] = logged(pipeline, name, "registry.reloaded")
        assert (line["version"], line["previous"]) == (added, first)

    # Accepted, evaluated (a breach raises an alarm), stored, on the map.
    publish(publisher, 2, t0 + 60_000, 1.0)
    publish(publisher, 3, t0 + 120_000, 2.5)

    def raised() -> list[dict[str, Any]]:
        return [a for a in topic_records(stack, topics.ALARMS)
                if a["facility_id"] == FID and a["event"] == "raised"]

    [alarm] = wait_for(raised, timeout=45, what="the new facility's alarm raised")
    assert (alarm["sensor"], alarm["level"], alarm["category"]) == (SENSOR, "blue", "facility")
    wait_for(lambda: influx_count(stack, f"\"facility\" = '{FID}'") == 2, timeout=30,
             what="the new facility's two readings stored")
    [(_, name, lat, lon, sensors)] = wait_for(lambda: facility_point(stack), timeout=30,
                                              what="the new facility's map point")
    assert (name, lat, lon, sensors) == ("Added manhole", 27.95, 120.85, 1)
    assert unknown() == [dl]  # nothing more dead-lettered

    # A bad file: refused by every service, which keeps the version it runs.
    bad_text = registry_path.read_text(encoding="utf-8") + "\nfacilities: [\n"
    tmp = registry_path.with_suffix(".tmp")
    tmp.write_text(bad_text, encoding="utf-8")
    tmp.replace(registry_path)
    bad = file_version(registry_path)

    def all_refused() -> dict[str, dict[str, Any]] | None:
        s = registry_state(pipeline)
        return s if all(x.get("refused") == bad and x["warning"] for x in s.values()) else None

    state = wait_for(all_refused, timeout=45, what=f"every service refusing version {bad}")
    for name, s in state.items():
        assert s["version"] == added and s["code"] == 200, (name, s)  # degraded, still ready
        assert f"(version {bad}) refused, keeping version {added}" in s["warning"], (name, s)
        [line] = logged(pipeline, name, "registry.reload_refused")
        assert (line["version"], line["keeping"]) == (bad, added)
        assert "YAML" in line["error"]
    publish(publisher, 4, t0 + 180_000, 1.0)  # the version in use goes on working
    wait_for(lambda: influx_count(stack, f"\"facility\" = '{FID}'") == 3, timeout=30,
             what="a reading stored while the bad file is on disk")

    # A good file again (the facility renamed): the refusal clears, the map point follows.
    write_registry(registry_path, [new_facility("Added manhole (renamed)")])
    fixed = file_version(registry_path)
    state = wait_for(lambda: all_run(pipeline, fixed), timeout=45,
                     what=f"every service on registry version {fixed}")
    assert all(s["warning"] is None and "refused" not in s for s in state.values()), state
    wait_for(lambda: (p := facility_point(stack)) and p[0][1] == "Added manhole (renamed)",
             timeout=30, what="the renamed facility's map point")
    # No service was restarted.
    assert {n: pipeline.services[n].proc.pid for n in SERVICES} == started  # type: ignore[union-attr]
    assert all(pipeline.services[n].running for n in SERVICES)
