"""Simulator benchmark: readings generated per second on one core.

    .venv/bin/python -m tests.bench.simulator [--scale 20] [--hours 2] [--scenario dry-day]

The scenario's facility models, faults and report building (JSON payloads ready for MQTT)
for a scaled registry (tens of thousands of sensors), timed by this process's CPU clock:
one core. Publishing is not included (that is MQTT's rate: see the ingest benchmark).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from schemas.registry import load_registry
from schemas.scenario import load_scenario
from simulators.scale import scale_registry
from simulators.scenario import SCENARIOS, ScenarioRun
from tests.bench.run import machine
from tests.support.paths import EXAMPLE_REGISTRY


def bench(scale: int = 20, hours: float = 2.0, scenario: str = "dry-day") -> dict[str, Any]:
    reg = scale_registry(load_registry(EXAMPLE_REGISTRY), scale)
    sc = load_scenario(SCENARIOS / f"{scenario}.yaml").model_copy(
        update={"duration_s": hours * 3600})
    run = ScenarioRun(reg, sc, t0=1_780_000_000.0, keep_truth=False)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    payload_bytes = 0
    for _t, _topic, payload in run.reports():
        payload_bytes += len(payload)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return {"benchmark": "simulator: readings generated on one core", "machine": machine(),
            "scenario": scenario, "scale": scale, "facilities": len(run.gateways),
            "sensors": run.sensor_count, "simulated_hours": hours,
            "reports": run.reports_sent, "readings": run.readings_sent,
            "payload_mb": round(payload_bytes / 2**20, 1), "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2), "readings_per_cpu_s": round(run.readings_sent / cpu),
            "speed_vs_real_time": round(hours * 3600 / wall)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--scenario", default="dry-day")
    a = ap.parse_args()
    print(json.dumps(bench(a.scale, a.hours, a.scenario), indent=2))


if __name__ == "__main__":
    main()
