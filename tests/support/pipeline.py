"""The pipeline of the integration tests: Lifeline's services as processes on the real
local stack, the test facilities added to the example registry, and what the fixtures in
tests/conftest.py need to start them.

The services are started as ``python -m services.cli NAME`` child processes against the
stack (tests/conftest.py starts it once per session, on free ports, in a temporary folder).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.stack.manager import Stack, free_port
from services.stack.services import SERVICES, ServiceProcess
from tests.support.paths import EXAMPLE_REGISTRY


def faust_ready(body: object) -> bool:
    return isinstance(body, dict) and body["counters"].get("assigned_partitions", 0) > 0


def writer_ready(body: object) -> bool:
    """Joined and the storage layout (retention policies, continuous query) is in place."""
    return faust_ready(body) and isinstance(body, dict) and "storage" not in body["problems"]


@dataclass
class Pipeline:
    stack: Stack
    services: dict[str, ServiceProcess]

    def restart(self, name: str, *, kill: bool = True) -> None:
        svc = self.services[name]
        if kill:
            svc.kill()
        else:
            svc.stop()
        svc.start()
        self.wait_ready(name)

    def wait_ready(self, name: str) -> None:
        ready = {"ingest": None, "processor": faust_ready, "writer": writer_ready}[name]
        self.services[name].wait_ready(90, ready=ready)


TEST_FACILITIES = [
    # Reports every second: its gateway counts as offline after 3 s of silence.
    {"id": "TEST-GW-1", "kind": "drainage", "name": "gateway test", "district": "test",
     "lat": 27.9, "lon": 120.8,
     "sensors": [{"id": "TEST-GW-1-L1", "metric": "water_level", "unit": "m", "range": [0, 7],
                  "interval_s": 1}]},
    # Its rule is edited by the reload test.
    {"id": "TEST-RL-1", "kind": "drainage", "name": "reload test", "district": "test",
     "lat": 27.9, "lon": 120.8,
     "sensors": [{"id": "TEST-RL-1-L1", "metric": "water_level", "unit": "m", "range": [0, 7],
                  "interval_s": 3600,
                  "rules": [{"levels": [{"level": "blue", "raise_at": 2.0, "source": "test"}]}]}]},
    # The writer's 1-minute tier (tests/writer/test_storage.py): values below every level.
    {"id": "TEST-RU-1", "kind": "drainage", "name": "rollup test", "district": "test",
     "lat": 27.9, "lon": 120.8,
     "sensors": [{"id": "TEST-RU-1-L1", "metric": "water_level", "unit": "m", "range": [0, 7],
                  "interval_s": 60,
                  "rules": [{"levels": [{"level": "blue", "raise_at": 5.0, "source": "test"}]}]}]},
    # The processor's crash-and-replay test (tests/processor/test_crash_replay.py): one
    # level sensor reporting hourly, so no wall-clock check fires during the test.
    {"id": "TEST-CR-1", "kind": "drainage", "name": "crash replay test", "district": "test",
     "lat": 27.9, "lon": 120.8,
     "sensors": [{"id": "TEST-CR-1-L1", "metric": "water_level", "unit": "m", "range": [0, 7],
                  "interval_s": 3600,
                  "rules": [{"levels": [{"level": "blue", "raise_at": 2.0, "source": "test"},
                                        {"level": "yellow", "raise_at": 2.5, "source": "test"},
                                        {"level": "red", "raise_at": 3.0, "source": "test"}]}]}]},
    # Packed readings through the pipeline (tests/pipeline/test_packed.py): three facilities
    # of its own (a later test's older readings at a shared one would be late).
    *({"id": f"TEST-PK-{n}", "kind": "drainage", "name": f"pack test {n}", "district": "test",
       "lat": 27.9, "lon": 120.8,
       "sensors": [{"id": f"TEST-PK-{n}-L1", "metric": "water_level", "unit": "m",
                    "range": [0, 7], "interval_s": 3600,
                    "rules": [{"levels": [{"level": "blue", "raise_at": 5.0,
                                           "source": "test"}]}]}]} for n in (1, 2, 3)),
]


def _life_facilities() -> list[dict[str, Any]]:
    """Facilities of the life-safety tests (test_lifesafety.py): windows open around the
    session's start, 2-second report intervals so outages show within seconds."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    window = {"starts": (now - timedelta(hours=1)).isoformat(),
              "ends": (now + timedelta(hours=12)).isoformat()}
    levels = [{"level": "blue", "raise_at": 1.5, "source": "test"},
              {"level": "yellow", "raise_at": 2.0, "source": "test"},
              {"level": "orange", "raise_at": 2.5, "source": "test"},
              {"level": "red", "raise_at": 2.9, "source": "test"}]

    def level(fid: str, **extra: Any) -> dict[str, Any]:
        return {"id": f"{fid}-L1", "metric": "water_level", "unit": "m", "range": [0, 7],
                "interval_s": 2, "rules": [{"levels": levels}], **extra}

    def fac(fid: str, kind: str, district: str, sensors: list[dict[str, Any]],
            **extra: Any) -> dict[str, Any]:
        return {"id": fid, "kind": kind, "name": f"{fid} (test)", "name_zh": f"{fid}测试",
                "district": district, "lat": 27.9, "lon": 120.8, "sensors": sensors, **extra}

    h2s = [{"level": "yellow", "raise_at": 10, "source": "test"},
           {"level": "orange", "raise_at": 20, "source": "test"},
           {"level": "red", "raise_at": 50, "source": "test"}]
    return [
        # A sewage pumping well being dredged: a crew below ground.
        fac("TEST-SP-1", "sewage", "test-life", [
            {"id": "TEST-SP-1-H1", "metric": "h2s", "unit": "mg/m³", "range": [0, 200],
             "interval_s": 2, "rules": [{"levels": h2s}]},
            level("TEST-SP-1")], criticality="critical",
            maintenance=[{"reason": "清淤 dredging (test)", **window,
                          "categories": ["facility", "sensor"], "metrics": ["water_level"],
                          "entry": True, "crew_leader": "测试 Crew Leader",
                          "crew_phone": "13800000099"}]),
        # Night works on a pump station's electrics: instrument alarms up to yellow silenced.
        fac("TEST-NW-1", "drainage", "test-life", [level("TEST-NW-1")],
            maintenance=[{"reason": "night works (test)", **window,
                          "categories": ["sensor", "gateway"], "silence_up_to": "yellow"}]),
        # A critical pump station and a rain gauge in a storm district.
        fac("TEST-DP-1", "drainage", "test-storm", [level("TEST-DP-1")],
            criticality="critical"),
        fac("TEST-RG-1", "drainage", "test-storm", [
            {"id": "TEST-RG-1-R1", "metric": "rainfall", "unit": "mm", "range": [0, 50],
             "interval_s": 60}]),
        # Manholes: surcharged gauge over range; dry-day gauge failure; a fault from calm.
        fac("TEST-MH-1", "drainage", "test-life", [level("TEST-MH-1", pipe_diameter_m=1.0)]),
        fac("TEST-MH-2", "drainage", "test-life", [level("TEST-MH-2", pipe_diameter_m=1.0)]),
        fac("TEST-MH-3", "drainage", "test-life", [{
            **level("TEST-MH-3", stuck_after_s=6),
            "rules": [{"levels": levels, "raise_after_s": 12}]}]),
        # A manhole reporting once a minute (event time): spike vs a sustained rise.
        fac("TEST-MH-4", "drainage", "test-life", [{
            "id": "TEST-MH-4-L1", "metric": "water_level", "unit": "m", "range": [0, 7],
            "interval_s": 60, "rules": [
                {"levels": levels, "raise_after_count": 2},
                {"signal": "rate", "window_s": 600, "rate_per_s": 60, "raise_after_count": 2,
                 "levels": [{"level": "yellow", "raise_at": 0.05, "clear_at": 0.02,
                             "source": "test"}]}]}]),
        # A gas manhole whose detector reports ppm.
        fac("TEST-SG-1", "sewage", "test-life", [
            {"id": "TEST-SG-1-H1", "metric": "h2s", "unit": "mg/m³", "range": [0, 200],
             "interval_s": 60, "rules": [{"levels": h2s}]}]),
    ]


TEST_FACILITIES.extend(_life_facilities())

# A construction site whose dust episode opens a work order for its contractor
# (tests/orders/test_order_loop.py): the hourly mean PM10 rule of the example sites, its
# clear after an hour back under the limit (verification from the data).
WO_SITE_UNIT = "TEST 工地承包商 test contractor"
TEST_FACILITIES.append({
    "id": "TEST-WO-SITE", "kind": "site", "name": "work-order dust site", "name_zh": "工单测试工地",
    "district": "test", "district_zh": "测试区", "lat": 27.95, "lon": 120.85,
    "owner_unit": WO_SITE_UNIT,
    "sensors": [{"id": "TEST-WO-SITE-PM10", "metric": "pm10", "unit": "µg/m³",
                 "range": [0, 2000], "interval_s": 60,
                 "rules": [{"signal": "mean", "window_s": 3600, "clear_after_s": 3600,
                            "levels": [{"level": "yellow", "raise_at": 150, "clear_at": 140,
                                        "source": "test"},
                                       {"level": "orange", "raise_at": 200, "clear_at": 150,
                                        "source": "test"}]}]}]})


def write_registry(path: Path, extra: list[dict[str, Any]]) -> None:
    doc = yaml.safe_load(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
    doc["facilities"].extend(extra)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)  # atomic: the processor never reads half a file


@contextmanager
def running_pipeline(stack: Stack, env: dict[str, str]) -> Iterator[Pipeline]:
    """Ingest, processor and writer as processes on ``stack``, ready, stopped afterwards."""
    procs = {n: ServiceProcess(n, env, stack.logs, free_port()) for n in SERVICES}
    p = Pipeline(stack, procs)
    for svc in procs.values():
        svc.start()
    try:
        for name in SERVICES:
            p.wait_ready(name)
        yield p
    finally:
        for svc in procs.values():
            svc.stop()


def publish_batches(publisher: Any, batches: list[Any]) -> None:
    """Reading batches (schemas.reading.ReadingBatch) published as their gateways' MQTT
    reports, in order, then flushed."""
    import json

    for b in batches:
        body = {"ts": b.readings[0].model_dump(mode="json")["ts"], "seq": b.seq,
                "readings": [{"sensor": r.sensor, "metric": r.metric.value, "value": r.value,
                              "unit": r.unit} for r in b.readings]}
        publisher.publish(f"lifeline/{b.kind.value}/{b.facility_id}/telemetry",
                          json.dumps(body).encode())
    assert publisher.flush(30)


@contextmanager
def second_processor(pipeline: Pipeline, env: dict[str, str]) -> Iterator[ServiceProcess]:
    """A second processor worker beside the pipeline's, yielded once the rebalance has given
    both of them partitions; stopped afterwards."""
    from tests.support.stack_helpers import wait_for

    first = pipeline.services["processor"]
    alone = first.counters()["assigned_partitions"]
    second = ServiceProcess("processor", env, pipeline.stack.logs, free_port(), instance="-2")
    second.start()
    try:
        second.wait_ready(90, ready=faust_ready)
        wait_for(lambda: 0 < first.counters().get("assigned_partitions", 0) < alone
                 and second.counters().get("assigned_partitions", 0) > 0, timeout=60,
                 what="partitions shared by two workers")
        yield second
    finally:
        second.stop()


def service_children() -> list[tuple[int, str]]:
    """(pid, command line) of Lifeline services this test process started."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        if ppid == me and "services.cli" in cmd:
            found.append((int(stat.parent.name), cmd))
    return sorted(found)


def pipeline_env_of(stack: Stack, registry_file: Path) -> dict[str, str]:
    """The services' environment on ``stack`` for the tests: fast batches, ticks and
    reloads, 2-second health reports (the session's pipeline and modules with their own)."""
    return {**stack.env(), "LIFELINE_REGISTRY": str(registry_file),
            "LIFELINE_WRITER_BATCH_SECONDS": "0.2", "LIFELINE_WRITER_RETRY_MAX_S": "1",
            "LIFELINE_PROCESSOR_TICK_INTERVAL_S": "1", "LIFELINE_RELOAD_CHECK_S": "1",
            "LIFELINE_WRITER_ROLLUP_HOUR_REFRESH_MIN": "1", "LIFELINE_WRITER_ROLLUP_LATENESS_S": "2",
            "LIFELINE_WRITER_BASELINE_WARMUP_H": "0",
            "LIFELINE_HEALTH_REPORT_S": "2"}

# District rules and shared signals with two workers (tests/processor/test_districts_live.py):
# three rain gauges in each of two districts no other test reports in (the example's
# rainstorm-signal rules; the example registry's `rainstorm` district rule groups them), and
# a dust site whose 15-minute count reads its excess over a background station.
RAIN_RULES = [
    {"signal": "sum", "window_s": 3600, "levels": [{"level": "blue", "raise_at": 20,
                                                     "clear_at": 15, "source": "test"}]},
    {"signal": "sum", "window_s": 10800, "levels": [
        {"level": "orange", "raise_at": 50, "clear_at": 45, "source": "test"},
        {"level": "red", "raise_at": 100, "clear_at": 90, "source": "test"}]}]
DISTRICT_TEST_DISTRICTS = ("test-east", "test-west")
for _d in DISTRICT_TEST_DISTRICTS:
    for _n in (1, 2, 3):
        _fid = f"TEST-{_d[5:].upper()}-G{_n}"
        TEST_FACILITIES.append({
            "id": _fid, "kind": "drainage", "name": f"rain gauge {_d} {_n}", "district": _d,
            "lat": 27.9, "lon": 120.8,
            "sensors": [{"id": f"{_fid}-R1", "metric": "rainfall", "unit": "mm",
                         "range": [0, 50], "interval_s": 300, "rules": RAIN_RULES}]})
TEST_FACILITIES += [
    {"id": "TEST-BG", "kind": "site", "name": "background station", "district": "test-dust",
     "lat": 27.9, "lon": 120.8,
     "sensors": [{"id": "TEST-BG-PM10", "metric": "pm10", "unit": "µg/m³", "range": [0, 2000],
                  "interval_s": 60}]},
    {"id": "TEST-DUST", "kind": "site", "name": "dust site", "district": "test-dust",
     "lat": 27.9, "lon": 120.8,
     "sensors": [{"id": "TEST-DUST-PM10", "metric": "pm10", "unit": "µg/m³",
                  "range": [0, 2000], "interval_s": 60,
                  "rules": [{"id": "excess-15min-count", "signal": "count", "of": "mean",
                             "window_s": 900, "count_above": 80,
                             "minus": {"facility": "TEST-BG", "sensor": "TEST-BG-PM10"},
                             "levels": [{"level": "yellow", "raise_at": 3, "source": "test"}]}]}]},
]
