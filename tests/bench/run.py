"""Benchmarks for the backbone (issue figures; results in docs/benchmarks.md).

    .venv/bin/python -m tests.bench.run ingest [--reports 40000] [--per-report 10]
    .venv/bin/python -m tests.bench.run stack [--runs 5]
    .venv/bin/python -m tests.bench.run all

Every run starts its own local stack on free ports in a temporary folder and prints the
machine it ran on. The ingest figure comes with a baseline measured in the same run: a
plain paho-mqtt QoS 1 subscriber that only counts messages (no validation, no Kafka).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from schemas.codec import READING_BATCH
from services.core import topics
from services.core.kafka_tools import read_topic
from services.core.settings import KafkaSettings
from services.stack.manager import Ports, Stack, free_port
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_registry(path: Path, facilities: int, per_facility: int) -> list[tuple[str, list[str]]]:
    facs = []
    doc: dict[str, Any] = {"name": "bench", "facilities": []}
    for i in range(facilities):
        fid = f"BENCH-{i:04d}"
        sensors = [f"{fid}-L{j}" for j in range(per_facility)]
        facs.append((fid, sensors))
        doc["facilities"].append({
            "id": fid, "kind": "drainage", "name": fid, "district": "bench", "lat": 27.9,
            "lon": 120.8,
            "sensors": [{"id": s, "metric": "water_level", "unit": "m", "range": [0, 7],
                         "interval_s": 10,
                         "rules": [{"levels": [{"level": "red", "raise_at": 6.5,
                                                "source": "bench"}]}]}
                        for s in sensors]})
    path.write_text(yaml.safe_dump(doc))
    return facs


def _payloads(facs: list[tuple[str, list[str]]], reports: int) -> list[tuple[str, bytes]]:
    t0 = int(time.time() * 1000) - reports  # unique, recent event times
    out = []
    for n in range(reports):
        fid, sensors = facs[n % len(facs)]
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((t0 + n) / 1000)) + \
            f".{(t0 + n) % 1000:03d}Z"
        body = {"ts": ts, "seq": n,
                "readings": [{"sensor": s, "metric": "water_level", "value": 1.0 + k / 100,
                              "unit": "m"} for k, s in enumerate(sensors)]}
        out.append((f"lifeline/drainage/{fid}/telemetry", json.dumps(body).encode()))
    return out


def _publish_proc(host: str, port: int, user: str, pw: str,
                  payloads: list[tuple[str, bytes]], done: Any) -> None:
    pub = Publisher(host, port, user, pw, client_id="bench-publisher", max_outstanding=4000)
    t = time.perf_counter()
    for topic, body in payloads:
        pub.publish(topic, body)
    pub.flush(120)
    done.put(time.perf_counter() - t)
    pub.close()


def _rate_from_samples(samples: list[tuple[float, int]], total: int) -> float:
    """Readings/s between 10 % and 90 % of the total (steady state, no ramp)."""
    lo = next(t for t, n in samples if n >= total * 0.1)
    hi_t, hi_n = next((t, n) for t, n in samples if n >= total * 0.9)
    lo_n = next(n for t, n in samples if t == lo)
    if hi_t > lo:
        return (hi_n - lo_n) / (hi_t - lo)
    # 10 % to 90 % arrived between two samples (a fast run, or a slow first poll): the
    # whole run's rate instead (this was NaN, and round(NaN) failed the smoke test in CI).
    last_t, last_n = samples[-1]
    return last_n / last_t if last_t > 0 else 0.0


def _baseline(stack: Stack, payloads: list[tuple[str, bytes]], per: int) -> dict[str, Any]:
    """paho QoS 1 subscriber that only counts: the ceiling MQTT + paho allow here."""
    env = stack.env()
    got = 0
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline", clean_session=True,
                    protocol=mqtt.MQTTv311)
    c.username_pw_set(env["LIFELINE_MQTT_USERNAME"], env["LIFELINE_MQTT_PASSWORD"])

    def on_message(*_a: Any) -> None:
        nonlocal got
        got += 1

    c.on_message = on_message
    c.on_subscribe = lambda *_a: ready.set()
    c.on_connect = lambda cl, *_a: cl.subscribe("lifeline/+/+/telemetry", qos=1)
    c.connect("127.0.0.1", stack.ports.mqtt)
    c.loop_start()
    ready.wait(10)
    result = _drive(stack, payloads, lambda: got, lambda: None)
    c.disconnect()
    c.loop_stop()
    result["readings_per_s"] = round(result["reports_per_s"] * per)
    return result


def _drive(stack: Stack, payloads: list[tuple[str, bytes]], count: Any,
           cpu: Any) -> dict[str, Any]:
    env = stack.env()
    total = len(payloads)
    done: Any = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=_publish_proc, args=(
        "127.0.0.1", stack.ports.mqtt, env["LIFELINE_SIMULATOR_MQTT_USERNAME"],
        env["LIFELINE_SIMULATOR_MQTT_PASSWORD"], payloads, done))
    cpu0 = cpu()
    t0 = time.perf_counter()
    proc.start()
    samples: list[tuple[float, int]] = []
    deadline = t0 + 600
    while time.perf_counter() < deadline:
        n = count()
        samples.append((time.perf_counter() - t0, n))
        if n >= total:
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    cpu1 = cpu()
    proc.join(60)
    final = count()
    out: dict[str, Any] = {
        "reports": total, "received": final, "elapsed_s": round(elapsed, 2),
        "reports_per_s": round(_rate_from_samples(samples, total)),
        "publisher_s": round(done.get(timeout=5), 2) if not done.empty() else None,
    }
    if cpu0 is not None and cpu1 is not None:
        out["cpu_s"] = round(cpu1 - cpu0, 2)
        out["cpu_share_of_one_core"] = round((cpu1 - cpu0) / elapsed, 2)
    return out


def bench_ingest(reports: int = 40000, per_report: int = 10) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        facs = bench_registry(root / "registry.yaml", 200, per_report)
        payloads = _payloads(facs, reports)
        stack = Stack(root / "state", Ports.free())
        stack.up()
        try:
            baseline = _baseline(stack, payloads, per_report)
            env = {**stack.env(), "LIFELINE_REGISTRY": str(root / "registry.yaml"),
                   "LIFELINE_LOG_LEVEL": "WARNING"}
            svc = ServiceProcess("ingest", env, stack.logs, free_port())
            svc.start()
            svc.wait_ready(30, ready=lambda b: b and b["status"] == "ok")
            assert svc.proc is not None
            pid = svc.proc.pid
            result = _drive(stack, payloads,
                            lambda: int(svc.counters().get("accepted_reports", 0)),
                            lambda: cpu_seconds(pid))
            result["readings_per_s"] = round(result["reports_per_s"] * per_report)
            kafka = KafkaSettings(bootstrap=f"127.0.0.1:{stack.ports.kafka}", flavor="tansu")
            reports = [0]  # a record may be a pack of reports (services/ingest/pack.py)

            def count(value: bytes) -> None:
                reports[0] += len(READING_BATCH.unpack(value))

            in_kafka = asyncio.run(read_topic(kafka, topics.READINGS, count, idle_timeout=2))
            result["records_in_kafka"] = in_kafka
            result["reports_in_kafka"] = reports[0]
            result["rejected"] = int(svc.counters().get("rejected_messages", 0))
            svc.stop()
        finally:
            stack.down()
    return {"benchmark": "ingest MQTT→Kafka, QoS 1, one ingest process",
            "readings_per_report": per_report, "machine": machine(), "ingest": result,
            "baseline_paho_subscriber": baseline,
            "ratio_to_baseline": round(result["reports_per_s"] / baseline["reports_per_s"], 2)}


def bench_stack(runs: int = 5) -> dict[str, Any]:
    times = []
    per_component: dict[str, list[float]] = {}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            stack = Stack(Path(tmp), Ports.free())
            t = time.perf_counter()
            stack.up()
            times.append(time.perf_counter() - t)
            for k, v in stack.startup_seconds.items():
                per_component.setdefault(k, []).append(v)
            stack.down()
    return {"benchmark": "stack up until all healthy (fresh state folder)", "runs": runs,
            "machine": machine(), "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3),
            "median_per_component_s": {k: round(statistics.median(v), 3)
                                       for k, v in per_component.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=["ingest", "stack", "all"])
    ap.add_argument("--reports", type=int, default=40000)
    ap.add_argument("--per-report", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    results = []
    if a.what in ("stack", "all"):
        results.append(bench_stack(a.runs))
    if a.what in ("ingest", "all"):
        results.append(bench_ingest(a.reports, a.per_report))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
