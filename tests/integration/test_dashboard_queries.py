"""Every query of every generated dashboard (panels, variables, annotations), run against
the real InfluxDB after a simulated round of the whole district: none may come back empty."""

from __future__ import annotations

import re
import time
from pathlib import Path

from schemas.registry import load_registry
from services.dashboards.generate import dashboards, queries
from simulators.basic import SteadySimulator
from simulators.publisher import Publisher
from tests.integration.conftest import Pipeline
from tests.integration.helpers import influx_query, wait_for

# Facilities other integration tests drive with their own (older) timestamps: leave them.
BUSY = re.compile(r"^(DR-(BH-001|KG-001|KJ-001|KJ-003|LW-001|LW-002|OF-00\d)|DU-LW-001|"
                  r"SG-(BH|KG|KJ|OF)-00\d)$")


def substitute(query: str) -> str:
    return (query.replace("$timeFilter", "time > now() - 1h").replace("$__interval", "5s")
            .replace("$district", ".*").replace("$facility", ".*").replace("$sensor", ".*"))


def test_every_dashboard_query_returns_data(pipeline: Pipeline, publisher: Publisher,
                                            registry_file: Path) -> None:
    stack = pipeline.stack
    registry = load_registry(registry_file)
    sim = SteadySimulator(registry, seed=5)
    sim.gateways = [g for g in sim.gateways
                    if not BUSY.match(g.facility.id) and not g.facility.id.startswith("TEST-")]
    # Alarms of each kind, and a sensor fault for the health table.
    for sensor, value in (("DR-BH-002-Q1", 4500.0), ("BR-KG-001-T1", 0.6),
                          ("SP-BH-001-H1", 60.0), ("SQ-BH-001-Q1", 5000.0)):
        sim.breach(sensor, value)
    start = time.time() - 120
    for step in range(0, 120, 10):
        for topic, payload in sim.reports(start + step):
            publisher.publish(topic, payload)
    assert publisher.flush(30)
    wait_for(lambda: influx_query(
        stack, "SELECT count(severity) FROM long.alarm_state WHERE facility='SQ-BH-001' "
               "AND category='sensor'"), timeout=60, what="scenario alarms stored")
    pending = {where: substitute(q) for board in dashboards(registry).values()
               for where, q in queries(board)}
    deadline = time.monotonic() + 30  # rates need a few pipeline-health rounds (every 2 s)
    while pending and time.monotonic() < deadline:
        pending = {w: q for w, q in pending.items() if not influx_query(stack, q)}
        time.sleep(1)
    assert pending == {}, f"queries that returned nothing: {sorted(pending)}"
