"""The bare chain: what glue with no validation, no rules and no Faust does on the same
stack — the baseline ``lifeline bench`` divides Lifeline's rate by (issue 16).

MQTT (the same Mosquitto) → a forwarder process (paho subscriber → aiokafka producer) →
the same broker → a store process (aiokafka consumer group → InfluxDB line protocol into the
same database, committed after each write). The same payloads as the load: gateway reports
of 10 readings. Each piece is its own process so that its CPU is counted apart, like
Lifeline's services; the broker's, Mosquitto's and influxd's CPU is counted over the same
window. ``python -m services.bench.bare forward|store …`` are the two processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

TOPIC = "lifeline.bench.bare"
MEASUREMENT = "bench_bare"
MQTT_PREFIX = "lifeline-bench/"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


# ------------------------------------------------------------------ the two processes
async def _forward(args: argparse.Namespace) -> None:
    import paho.mqtt.client as mqtt
    from aiokafka import AIOKafkaProducer
    from paho.mqtt.enums import CallbackAPIVersion

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare-forwarder")
    sub.username_pw_set(args.mqtt_user, os.environ["BENCH_MQTT_PASSWORD"])

    def on_connect(c: Any, *_a: Any) -> None:
        c.subscribe(MQTT_PREFIX + "#", qos=1)

    def on_subscribe(*_a: Any) -> None:
        subscribed.set()

    def on_message(_c: Any, _u: Any, m: Any) -> None:
        key = m.topic.split("/")[2].encode()  # lifeline-bench/<kind>/<facility>/telemetry
        loop.call_soon_threadsafe(queue.put_nowait, (key, bytes(m.payload)))

    sub.on_connect, sub.on_subscribe, sub.on_message = on_connect, on_subscribe, on_message
    sub.connect("127.0.0.1", args.mqtt_port)
    sub.loop_start()
    producer = AIOKafkaProducer(bootstrap_servers=args.kafka, acks="all", linger_ms=100)
    await producer.start()
    await asyncio.to_thread(subscribed.wait, 30)
    cpu0 = time.process_time()
    print("ready", flush=True)
    for _ in range(args.reports):
        key, value = await queue.get()
        await producer.send(TOPIC, value, key=key)  # queued; acknowledged in batches
    await producer.flush()
    cpu = time.process_time() - cpu0
    await producer.stop()
    sub.loop_stop()
    print(json.dumps({"forwarded": args.reports, "cpu_s": cpu}), flush=True)


async def _store(args: argparse.Namespace) -> None:
    import aiohttp
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=args.kafka, group_id="bench-bare",
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=50, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    cpu0 = time.process_time()
    print("ready", flush=True)
    url = f"{args.influx}/write"
    params = {"db": args.database, "precision": "ms"}
    stored = 0
    async with aiohttp.ClientSession() as http:
        while stored < args.readings:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            lines = []
            for records in batch.values():
                for r in records:
                    report = json.loads(r.value)
                    ts = int(datetime.fromisoformat(report["ts"]).timestamp() * 1000)
                    for x in report["readings"]:
                        lines.append(f"{MEASUREMENT},facility={r.key.decode()},"
                                     f"sensor={x['sensor']} value={float(x['value'])} {ts}")
            if not lines:
                continue
            async with http.post(url, params=params, data="\n".join(lines).encode()) as resp:
                if resp.status != 204:
                    raise SystemExit(f"influxdb refused the bare chain's write: {resp.status} "
                                     f"{(await resp.text())[:200]}")
            await consumer.commit()
            stored += len(lines)
    cpu = time.process_time() - cpu0
    await consumer.stop()
    print(json.dumps({"stored": stored, "cpu_s": cpu}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.bench.bare")
    p.add_argument("role", choices=("forward", "store"))
    p.add_argument("--kafka", required=True)
    p.add_argument("--mqtt-port", type=int, default=0)
    p.add_argument("--mqtt-user", default="")
    p.add_argument("--influx", default="")
    p.add_argument("--database", default="lifeline")
    p.add_argument("--reports", type=int, default=0)
    p.add_argument("--readings", type=int, default=0)
    args = p.parse_args(argv)
    asyncio.run(_forward(args) if args.role == "forward" else _store(args))


# ------------------------------------------------------------------ the measurement
def run_bare_chain(env: dict[str, str], ports_mqtt: int, components: dict[str, int],
                   reports: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Publish ``reports`` (``(kind/facility/telemetry, payload)``: the load's own payloads)
    through the bare chain and return its rate and the CPU µs per reading of every component
    (``components``: name → pid of the stack's processes; the forwarder, the store and this
    publisher are added)."""
    from simulators.publisher import Publisher

    readings = sum(len(json.loads(p)["readings"]) for _, p in reports)
    payloads = reports
    child_env = {**os.environ, "BENCH_MQTT_PASSWORD": env["LIFELINE_BENCH_MQTT_PASSWORD"]}
    common = ["--kafka", env["LIFELINE_KAFKA_BOOTSTRAP"]]
    py = [sys.executable, "-m", "services.bench.bare"]
    store = subprocess.Popen([*py, "store", *common, "--influx", env["LIFELINE_INFLUX_URL"],
                              "--database", env["LIFELINE_INFLUX_DATABASE"],
                              "--readings", str(readings)],
                             stdout=subprocess.PIPE, env=child_env, text=True)
    forward = subprocess.Popen([*py, "forward", *common, "--mqtt-port", str(ports_mqtt),
                                "--mqtt-user", env["LIFELINE_BENCH_MQTT_USERNAME"],
                                "--reports", str(len(payloads))],
                               stdout=subprocess.PIPE, env=child_env, text=True)
    try:
        for role, proc in (("store", store), ("forwarder", forward)):
            line = proc.stdout.readline() if proc.stdout else ""
            if line.strip() != "ready":
                raise RuntimeError(f"the bare chain's {role} did not start: {line!r}")
        pids = {**components, "load generator": os.getpid()}
        cpu0 = {n: cpu_seconds(pid) for n, pid in pids.items()}
        pub = Publisher("127.0.0.1", ports_mqtt, env["LIFELINE_SIMULATOR_MQTT_USERNAME"],
                        env["LIFELINE_SIMULATOR_MQTT_PASSWORD"], client_id="bench-bare-pub")
        t0 = time.perf_counter()
        for topic, payload in payloads:
            pub.publish(MQTT_PREFIX + topic, payload)
        pub.flush(120)
        fwd_out = forward.communicate(timeout=300)[0]
        out = store.communicate(timeout=300)[0]
        seconds = time.perf_counter() - t0
        cpu = {n: max(0.0, cpu_seconds(pid) - cpu0[n]) for n, pid in pids.items()}
        pub.close()
    finally:
        for proc in (forward, store):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    fwd = json.loads(fwd_out.strip().splitlines()[-1])
    done = json.loads(out.strip().splitlines()[-1])
    cpu["bare forwarder"], cpu["bare store"] = fwd["cpu_s"], done["cpu_s"]
    stored = done["stored"]
    stored = json.loads(out.strip().splitlines()[-1])["stored"]
    return {"reports": len(payloads), "readings": readings, "stored": stored,
            "seconds": round(seconds, 2), "readings_per_s": round(readings / seconds),
            "cpu_us_per_reading": {n: round(1e6 * c / readings, 1) for n, c in cpu.items()}}


if __name__ == "__main__":
    main()
