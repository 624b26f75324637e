"""Notifier benchmark: time from an alarm event on Kafka to the message at the receiver.

    .venv/bin/python -m tests.bench.notifier [--alarms 300] [--rate 10]

The local stack (Tansu) and one ``lifeline notifier`` worker; a local HTTP receiver (the
webhook channel, HMAC-signed) in this process. Alarm events for distinct facilities are
produced at ``--rate`` per second; each one's latency is receipt time minus the time its
produce began — Kafka, the agent, the table write, delivery and the HTTP request
included. Grouping is off (window 0): this measures the path, not the storm policy
(an alarm beyond a recipient's burst waits for the grouping window by design).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer

from services.core import topics
from services.stack.manager import Ports, Stack, free_port
from services.stack.services import ServiceProcess
from tests.bench.run import cpu_seconds, machine
from tests.support.oncall_helpers import alarm
from tests.support.receivers import Receiver

SECRET = "bench-webhook-secret-0123456789"


def oncall(path: Path, port: int) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    path.write_text(yaml.safe_dump({
        "people": [{"id": "ann", "name": "Ann"}],
        "channels": [{"id": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/webhook",
                      "secret_env": "BENCH_WEBHOOK_SECRET"}],
        "teams": [{"id": "t", "name": "T", "layers": [{"name": "l", "members": ["ann"],
                                                      "handover": start}],
                   "escalation": [{"notify": "on_duty", "channels": ["hook"], "wait_s": 3600}]}],
        "routes": [{"team": "t"}],
        "grouping": {"window_s": 0},
    }))


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


async def drive(stack: Stack, svc: ServiceProcess, rx: Receiver, alarms: int, rate: float
                ) -> dict[str, Any]:
    sent: dict[str, float] = {}
    p = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}")
    await p.start()
    now = datetime.now(UTC)
    assert svc.proc is not None
    cpu0, t_start = cpu_seconds(svc.proc.pid), time.perf_counter()
    try:
        for i in range(alarms):
            ev = alarm(fid=f"BENCH-{i:05d}", sensor="S1", level="orange", started=now)
            sent[ev.alarm_id] = time.time()
            await p.send_and_wait(topics.ALARMS, ev.model_dump_json().encode(),
                                  key=ev.facility_id.encode())
            await asyncio.sleep(max(0.0, t_start + (i + 1) / rate - time.perf_counter()))
    finally:
        await p.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = {a["alarm_id"] for r in rx.received for a in r.body["alarms"]}
        if len(got) >= alarms:
            break
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t_start
    cpu = cpu_seconds(svc.proc.pid) - cpu0
    lat = [r.at - sent[a["alarm_id"]] for r in rx.received for a in r.body["alarms"]
           if a["alarm_id"] in sent]
    return {"alarms": alarms, "received": len(lat),
            "rejected_by_receiver": sum(1 for r in rx.received if r.problems),
            "latency_s": {"p50": round(pct(lat, 0.50), 3), "p99": round(pct(lat, 0.99), 3),
                          "max": round(max(lat), 3), "mean": round(statistics.mean(lat), 3)}
            if lat else None, "notifier_cpu_share": round(cpu / elapsed, 2)}


def bench(alarms: int = 300, rate: float = 10.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stack = Stack(root / "state", Ports.free())
        stack.up()

        async def main() -> dict[str, Any]:
            rx = await Receiver({"webhook": SECRET}).start()
            try:
                oncall(root / "oncall.yaml", rx.port)
                port, public = free_port(), free_port()
                svc = ServiceProcess("notifier", {
                    **stack.env(), "LIFELINE_NOTIFIER_ONCALL": str(root / "oncall.yaml"),
                    "LIFELINE_NOTIFIER_PUBLIC_PORT": str(public),
                    "LIFELINE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{public}",
                    "LIFELINE_LOG_LEVEL": "WARNING", "BENCH_WEBHOOK_SECRET": SECRET},
                    stack.logs, port)
                svc.start()
                try:
                    await asyncio.to_thread(svc.wait_ready, 90, ready=lambda b: b and b[
                        "counters"].get("assigned_partitions", 0) > 0)
                    return await drive(stack, svc, rx, alarms, rate)
                finally:
                    svc.stop()
            finally:
                await rx.stop()

        try:
            result = asyncio.run(main())
        finally:
            stack.down()
    return {"benchmark": "notifier: alarm event on Kafka → webhook message received",
            "machine": machine(), "rate_per_s": rate, **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--alarms", type=int, default=300)
    ap.add_argument("--rate", type=float, default=10.0)
    a = ap.parse_args()
    print(json.dumps(bench(a.alarms, a.rate), indent=2))


if __name__ == "__main__":
    main()
