"""Integration fixtures: the real local stack and Lifeline's services as processes.

The stack (Mosquitto, Tansu, influxd) is started once per session by the same code as
``lifeline stack up``, on free ports, with its data in a temporary folder; the services
are started as ``python -m services.cli NAME`` child processes against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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
        self.services[name].wait_ready(90, ready=None if name == "ingest" else faust_ready)


@pytest.fixture(scope="session")
def pipeline(stack: Stack) -> Iterator[Pipeline]:
    env = {**stack.env(), "LIFELINE_REGISTRY": str(EXAMPLE_REGISTRY),
           "LIFELINE_WRITER_BATCH_SECONDS": "0.2", "LIFELINE_WRITER_RETRY_MAX_S": "1"}
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
