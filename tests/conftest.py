"""Shared fixtures and the tiers.

The tests mirror the source tree (tests/<area>/); the tier of a test is a marker set here,
so no test can forget it:

- ``integration``: the test requests one of ``STACK_FIXTURES`` (the real local stack —
  Mosquitto, Tansu, influxd — started once per session by the same code as
  ``lifeline stack up``, on free ports, with its data in a temporary folder; the services as
  ``python -m services.cli NAME`` child processes against it), or its module sets
  ``pytestmark = pytest.mark.integration`` (it starts components, a stack or Chromium of
  its own);
- ``bench``: under tests/bench/;
- ``unit``: everything else — in memory, no external process. The fixtures below start
  nothing unless a test requests them.

A test marked both ``unit`` and ``integration`` is a collection error. ``chaos`` (a subset
of integration) and ``long`` are set by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from schemas.registry import Registry, load_registry
from services.stack.manager import Ports, Stack, check_dependencies
from simulators.publisher import Publisher
from tests.support.paths import EXAMPLE_REGISTRY, ROOT
from tests.support.pipeline import (
    TEST_FACILITIES,
    Pipeline,
    pipeline_env_of,
    running_pipeline,
    service_children,
    write_registry,
)

__all__ = ["EXAMPLE_REGISTRY", "ROOT", "STACK_FIXTURES"]

# Requesting any of these (directly or through another fixture) makes a test `integration`.
STACK_FIXTURES = ("stack", "registry_file", "pipeline_env", "pipeline", "publisher", "logs")

LONG_TESTS = os.environ.get("LIFELINE_LONG_TESTS") == "1"
BENCH = ROOT / "tests" / "bench"


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(EXAMPLE_REGISTRY)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    missing = check_dependencies()
    if missing:
        pytest.fail("local stack not installed (run scripts/bootstrap.sh): " + "; ".join(missing))
    s = Stack(tmp_path_factory.mktemp("stack"), Ports.free())
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="session")
def registry_file(stack: Stack) -> Path:
    path = stack.state / "registry.yaml"
    write_registry(path, TEST_FACILITIES)
    return path


@pytest.fixture(scope="session")
def pipeline_env(stack: Stack, registry_file: Path) -> dict[str, str]:
    return pipeline_env_of(stack, registry_file)


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


def _tier(item: pytest.Item) -> str:
    if set(STACK_FIXTURES) & set(getattr(item, "fixturenames", ())):
        return "integration"
    if item.get_closest_marker("integration"):
        return "integration"
    if item.path.is_relative_to(BENCH):
        return "bench"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests marked `long` (long scenario runs) run on demand: `make long`
    # (LIFELINE_LONG_TESTS=1).
    skip_long = pytest.mark.skip(reason="long: run on demand with `make long`")
    both = []
    for item in items:
        if item.get_closest_marker("long") and not LONG_TESTS:
            item.add_marker(skip_long)
        tier = _tier(item)
        if tier == "integration" and item.get_closest_marker("unit"):
            both.append(item.nodeid)
        item.add_marker(tier)
    if both:
        raise pytest.UsageError(
            "marked both unit and integration (a test that starts components is not a unit "
            "test): " + ", ".join(both))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When an integration test fails, dump every live service's Python stacks (py-spy,
    when installed) into the report and the logs folder — a wedged worker is gone once the
    fixtures tear down."""
    report: pytest.TestReport = yield
    if not (report.failed and call.when == "call" and item.get_closest_marker("integration")):
        return report  # (unit tests may have stubbed shutil.which: look it up only here)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not spy:
        return report
    dumps = []
    for pid, cmd in service_children():
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
