"""Integration fixtures: the real local stack and Lifeline's services as processes.

The stack (Mosquitto, Tansu, influxd) is started once per session by the same code as
``lifeline stack up``, on free ports, with its data in a temporary folder; the services
are started as ``python -m services.cli NAME`` child processes against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.stack.manager import Ports, Stack, check_dependencies, free_port
from services.stack.services import SERVICES, ServiceProcess
from simulators.publisher import Publisher
from tests.conftest import EXAMPLE_REGISTRY


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = check_dependencies()
    if missing:
        pytest.fail("local stack not installed (run scripts/bootstrap.sh): " + "; ".join(missing))
    s = Stack(tmp_path_factory.mktemp("stack"), Ports.free())
    s.up()
    yield s
    s.down()


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


def write_registry(path: Path, extra: list[dict[str, Any]]) -> None:
    doc = yaml.safe_load(EXAMPLE_REGISTRY.read_text(encoding="utf-8"))
    doc["facilities"].extend(extra)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)  # atomic: the processor never reads half a file


@pytest.fixture(scope="session")
def registry_file(stack: Stack) -> Path:
    path = stack.state / "registry.yaml"
    write_registry(path, TEST_FACILITIES)
    return path


@pytest.fixture(scope="session")
def pipeline_env(stack: Stack, registry_file: Path) -> dict[str, str]:
    return {**stack.env(), "LIFELINE_REGISTRY": str(registry_file),
            "LIFELINE_WRITER_BATCH_SECONDS": "0.2", "LIFELINE_WRITER_RETRY_MAX_S": "1",
            "LIFELINE_PROCESSOR_TICK_INTERVAL_S": "1", "LIFELINE_RELOAD_CHECK_S": "1",
            "LIFELINE_WRITER_CQ_RESAMPLE_EVERY": "2s", "LIFELINE_WRITER_CQ_HOURLY_EVERY": "2s",
            "LIFELINE_WRITER_BASELINE_WARMUP_H": "0",
            "LIFELINE_HEALTH_REPORT_S": "2"}


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


@pytest.fixture(scope="session")
def pipeline(stack: Stack, pipeline_env: dict[str, str]) -> Iterator[Pipeline]:
    with running_pipeline(stack, pipeline_env) as p:
        yield p


@pytest.fixture
def publisher(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Publisher]:
    env = stack.env()
    pub = Publisher("127.0.0.1", stack.ports.mqtt, env["LIFELINE_SIMULATOR_MQTT_USERNAME"],
                    env["LIFELINE_SIMULATOR_MQTT_PASSWORD"],
                    client_id=f"test-{request.node.name}"[:60])
    yield pub
    pub.close()


@pytest.fixture
def logs(stack: Stack) -> Path:
    return stack.logs


def _service_children() -> list[tuple[int, str]]:
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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When an integration test fails, dump every live service's Python stacks (py-spy,
    when installed) into the report and the logs folder — a wedged worker is gone once the
    fixtures tear down."""
    report: pytest.TestReport = yield
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not (report.failed and call.when == "call" and spy):
        return report
    dumps = []
    for pid, cmd in _service_children():
        res = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                             timeout=30, check=False)
        dumps.append(f"### {pid} {cmd}\n{res.stdout}{res.stderr}")
    if dumps:
        text = "\n".join(dumps)
        item.add_report_section("call", "service stacks (py-spy)", text)
        args = getattr(item, "funcargs", {})
        pipe = args.get("pipeline")
        where = pipe.stack if isinstance(pipe, Pipeline) else args.get("stack")
        if isinstance(where, Stack):
            (where.logs / f"stacks-{item.name}.txt").write_text(text, encoding="utf-8")
    return report
