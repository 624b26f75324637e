"""``lifeline bench``: the whole local stack under a sustained load, measured.

One run: a registry of ``sensors`` water-level sensors (10 per gateway) reporting every
``interval_s``; the local stack (Mosquitto, Tansu, influxd) and every service (ingest,
processor, writer, notifier) as processes; a publisher pacing gateway reports at the
offered rate; plus a marker gateway whose sensor is pushed over its threshold and back
every two seconds, to time publish → alarm event (Kafka), → stored point (InfluxDB) and
→ notification received (a local webhook receiver). Sampled every 5 s: CPU and RSS of
every component, consumer lag. At the end: readings accepted, evaluated and stored, DLQ
and loss counts (published vs accepted), and — measured first, in the same run — a plain
baseline: paho subscriber → aiokafka producer → aiokafka consumer, no validation, no Faust.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from schemas.codec import ALARM_EVENT, TELEMETRY
from schemas.storage import Field, Measurement, Tag
from services.bench.bare import run_bare_chain
from services.core import topics
from services.core.influx import Endpoint, QueryError, query_sync
from services.core.kafka_tools import follow_in_thread
from services.core.settings import KafkaSettings
from services.stack.manager import Ports, Stack, StackSettings, free_port
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher

MARK = "LOAD-MARK"


IDLE_S = 10.0  # the idle phase before the load (fixed cost per component)


def _registry(path: Path, gateways: int, interval_s: float) -> None:
    def sensor(sid: str) -> dict[str, Any]:
        return {"id": sid, "metric": "water_level", "unit": "m", "range": [0, 10],
                "interval_s": interval_s,
                "rules": [{"levels": [{"level": "red", "raise_at": 6.5, "clear_at": 6.0,
                                       "source": "bench"}]}]}

    facs = [{"id": f"LOAD-{i:06d}", "kind": "drainage", "name": f"load {i}",
             "district": f"D{i % 5}", "lat": 27.9, "lon": 120.8,
             "sensors": [sensor(f"LOAD-{i:06d}-L{j}") for j in range(10)]}
            for i in range(gateways)]
    facs.append({"id": MARK, "kind": "drainage", "name": "marker", "district": "D0",
                 "lat": 27.9, "lon": 120.8, "sensors": [{**sensor(f"{MARK}-L1"),
                                                         "interval_s": 1.0}]})
    # The marker raises and clears every two seconds by design: not flapping.
    path.write_text(json.dumps({"name": "load bench", "facilities": facs,
                                "policy": {"flap_max_transitions": 1_000_000}}))


def _oncall(path: Path, port: int) -> None:
    start = datetime.now(UTC).isoformat()
    path.write_text(yaml.safe_dump({
        "people": [{"id": "bench", "name": "Bench"}],
        "channels": [{"id": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/"}],
        "teams": [{"id": "t", "name": "T", "layers": [{"name": "l", "members": ["bench"],
                                                      "handover": start}],
                   "escalation": [{"notify": "on_duty", "channels": ["hook"],
                                   "wait_s": 3600}]}],
        "routes": [{"match": {"facility": [MARK]}, "team": "t"}],
        "grouping": {"window_s": 0}}))


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class Probe:
    """Publish times of marker readings by event time (ms), and what became of them."""

    published: dict[int, float] = field(default_factory=dict)
    alarm: dict[int, float] = field(default_factory=dict)
    stored: dict[int, float] = field(default_factory=dict)
    notified: dict[int, float] = field(default_factory=dict)

    def latencies(self, seen: dict[int, float]) -> dict[str, Any]:
        lat = sorted(seen[k] - self.published[k] for k in seen if k in self.published)
        if not lat:
            return {"samples": 0}
        return {"samples": len(lat), "p50_ms": round(1000 * lat[len(lat) // 2]),
                "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))]),
                "max_ms": round(1000 * lat[-1])}


def _proc_stats(pid: int) -> tuple[float, int]:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
                   .splitlines() if line.startswith("VmRSS"))
        return cpu, rss * 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0


# What the bench sets for the services unless the environment says otherwise.
# Packs of 200 ms, not 100: half the batches Tansu lists on every fetch (it grew 0.17 → 0.45
# cores over ten minutes at 10,000 readings/s with 100, 0.17 → 0.24 with 200) for ~50 ms
# more on the alarm path (docs/benchmarks.md, 2026-12-04).
BENCH_SETTINGS = (("LIFELINE_KAFKA_LINGER_MS", "5"), ("LIFELINE_INGEST_PACK_MS", "200"))


def run_bench(*, sensors: int, interval_s: float, duration_s: float, state: Path,
              baseline_reports: int = 50000, keep_logs: Path | None = None,
              idle_s: float = IDLE_S) -> dict[str, Any]:
    from aiohttp import web

    gateways = max(1, sensors // 10)
    state.mkdir(parents=True, exist_ok=True)
    _registry(state / "registry.json", gateways, interval_s)
    partitions = StackSettings().partitions  # LIFELINE_STACK_PARTITIONS, as `lifeline run`
    stack = Stack(state / "stack", Ports.free(), partitions=partitions)
    stack.up()
    probe = Probe()
    result: dict[str, Any] = {"sensors": gateways * 10, "interval_s": interval_s,
                              "offered_readings_per_s": round(gateways * 10 / interval_s),
                              "duration_s": duration_s}
    procs: dict[str, ServiceProcess] = {}
    stop = threading.Event()
    rx_stop = threading.Event()
    try:
        # The baseline first, on the same machine and stack, nothing else running: the
        # bare chain (services/bench/bare.py) with the load's payloads, 1 ms apart.
        t_sample = time.time() - baseline_reports / 1000
        sample = [(f"drainage/LOAD-{i % gateways:06d}/telemetry", TELEMETRY.encode_plain(
            _ts(t_sample + i / 1000), i, [
                {"sensor": f"LOAD-{i % gateways:06d}-L{j}", "metric": "water_level",
                 "value": 1.0, "unit": "m"} for j in range(10)]))
            for i in range(baseline_reports)]
        result["bare_chain"] = run_bare_chain(stack.env(), stack.ports.mqtt, stack.running(),
                                              sample)

        # The receiver of the notifier's pages (the on-call path's end).
        rx_port = free_port()
        rx_ready = threading.Event()

        def serve() -> None:
            async def page(request: web.Request) -> web.Response:
                body = await request.json()
                now = time.time()
                for a in body.get("alarms", []):
                    if a.get("notification") == "page":
                        key = int(datetime.fromisoformat(a["ts"]).timestamp() * 1000)
                        probe.notified.setdefault(key, now)
                return web.Response(status=204)

            async def main() -> None:
                app = web.Application()
                app.router.add_post("/", page)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", rx_port).start()
                rx_ready.set()
                while not rx_stop.is_set():  # noqa: ASYNC110 — bridges a threading.Event
                    await asyncio.sleep(0.2)
                await runner.cleanup()

            asyncio.run(main())

        threading.Thread(target=serve, daemon=True).start()
        rx_ready.wait(10)
        _oncall(state / "oncall.yaml", rx_port)
        # Few, large batches keep Tansu's fetches cheap at tens of thousands of readings a
        # second (decision 0012); the local default stays at 2 ms. Packs (ingest's
        # pack.py) make fewer, larger records.
        tuned = {name: os.environ.get(name, default) for name, default in BENCH_SETTINGS}
        result["settings"] = {**tuned, "LIFELINE_STACK_PARTITIONS": str(partitions)}
        env = {**stack.env(), "LIFELINE_REGISTRY": str(state / "registry.json"),
               "LIFELINE_LOG_LEVEL": "WARNING", "LIFELINE_HEALTH_REPORT_S": "5", **tuned,
               "LIFELINE_NOTIFIER_ONCALL": str(state / "oncall.yaml")}
        for name in ("ingest", "processor", "writer", "notifier"):
            port = free_port()
            public = free_port()
            extra = {"LIFELINE_NOTIFIER_PUBLIC_PORT": str(public),
                     "LIFELINE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{public}"} \
                if name == "notifier" else {}
            procs[name] = ServiceProcess(name, {**env, **extra}, stack.logs, port)
            procs[name].start()
        for name, p in procs.items():
            p.wait_ready(180, ready=None if name == "ingest" else
                         lambda b: b and b["counters"].get("assigned_partitions", 0) > 0)
        result.update(_drive(stack, procs, probe, gateways, interval_s, duration_s, stop,
                             idle_s))
    finally:
        stop.set()
        for p in procs.values():
            p.stop()
        rx_stop.set()  # after the notifier: its last pages still find the receiver
        stack.down()
        if keep_logs is not None:
            import shutil

            shutil.copytree(stack.logs, keep_logs, dirs_exist_ok=True)
    result["latency_publish_to_alarm"] = probe.latencies(probe.alarm)
    result["latency_publish_to_stored"] = probe.latencies(probe.stored)
    result["latency_publish_to_notification"] = probe.latencies(probe.notified)
    accepted = result["ingest"]["accepted_readings"]
    # Lifeline ÷ bare chain, two ways, both of the same run. The headline is capacity: CPU
    # per reading of the whole bare chain over Lifeline's (the load generator left out of
    # both), i.e. what share of the bare chain's readings per machine Lifeline carries —
    # independent of how fast one Python publisher can go. The rate ratio (sustained
    # accepted/s over the bare chain's burst rate) is reported beside it; on a 2-core
    # machine the bare burst is bound by its publisher, so that ratio flatters Lifeline.
    def chain_cpu(per_reading: dict[str, float]) -> float:
        return sum(v for k, v in per_reading.items() if k != "load generator")

    bare = result["bare_chain"]
    result["cpu_us_per_reading_total"] = round(chain_cpu(result["cpu_us_per_reading"]), 1)
    bare["cpu_us_per_reading_total"] = round(chain_cpu(bare["cpu_us_per_reading"]), 1)
    result["ratio_to_bare_chain"] = round(
        bare["cpu_us_per_reading_total"] / max(result["cpu_us_per_reading_total"], 1e-9), 3)
    result["ratio_to_bare_chain_rate"] = round(
        accepted / duration_s / bare["readings_per_s"], 3)
    return result


def _drive(stack: Stack, procs: dict[str, ServiceProcess], probe: Probe, gateways: int,
           interval_s: float, duration_s: float, stop: threading.Event,
           idle_s: float = IDLE_S) -> dict[str, Any]:
    env = stack.env()
    pub = Publisher("127.0.0.1", stack.ports.mqtt, env["LIFELINE_SIMULATOR_MQTT_USERNAME"],
                    env["LIFELINE_SIMULATOR_MQTT_PASSWORD"], client_id="bench-load")
    kafka = KafkaSettings(bootstrap=env["LIFELINE_KAFKA_BOOTSTRAP"], flavor="tansu")
    stop_alarms = threading.Event()

    alarms = {"during_load": Counter[str](), "after_load": Counter[str]()}
    loading = threading.Event()
    loading.set()

    def on_alarm(raw: bytes) -> None:
        try:
            ev = ALARM_EVENT.decode(raw)
        except ValueError:
            return
        # Gateways declared offline while the pipeline drains are right, but they are not
        # the load's alarms: reported apart, by category and phase.
        alarms["during_load" if loading.is_set() else "after_load"][
            f"{ev.category.value}.{ev.event.value}"] += 1
        if ev.facility_id == MARK and ev.event.value == "raised":
            key = int(ev.ts.timestamp() * 1000)
            probe.alarm.setdefault(key, time.time())

    follow_in_thread(kafka, topics.ALARMS, on_alarm, stop_alarms, name="bench-alarms")

    influx = Endpoint(env["LIFELINE_INFLUX_URL"], env["LIFELINE_INFLUX_DATABASE"])

    def poll_stored() -> None:
        # The newest point of the mark's one series (breaches are told by their time): no
        # field condition, a short range — the probe must not load the database it measures
        # (with `value > 6` over 5 minutes each query took ~22 ms of influxd, 12 a second).
        q = (f"SELECT last({Field.VALUE}) FROM {Measurement.READING} "  # noqa: S608 — constants
             f"WHERE {Tag.FACILITY}='{MARK}' AND {Tag.SENSOR}='{MARK}-L1' "
             f"AND time > now() - 1m")
        while not stop_alarms.is_set():
            try:
                series = query_sync(influx, q, timeout_s=2)
                if series:
                    t = int(series[0]["values"][0][0])
                    if t in probe.published:
                        probe.stored.setdefault(t, time.time())
            except QueryError:
                pass
            time.sleep(0.05)

    threading.Thread(target=poll_stored, daemon=True).start()
    comps = {**{name: sp.proc.pid for name, sp in procs.items() if sp.proc is not None},
             **stack.running(), "load generator": os.getpid()}
    # The fixed cost: every component's CPU with the pipeline up and no load (timers,
    # polls, ticks), so a per-reading figure can be read as fixed + per-reading work.
    idle_from = {name: _proc_stats(pid)[0] for name, pid in comps.items()}
    time.sleep(idle_s)
    idle = {name: round((_proc_stats(pid)[0] - idle_from[name]) / idle_s, 3)
            for name, pid in comps.items()}
    samples: list[dict[str, Any]] = []
    last_cpu = {name: _proc_stats(pid)[0] for name, pid in comps.items()}
    cpu_start = dict(last_cpu)
    seq = dict.fromkeys(range(gateways), 0)
    per_tick = gateways * 0.1 / interval_s  # reports per 100 ms
    start = time.monotonic()
    next_sample = start + 5
    next_mark = start + 1
    mark_seq = 0
    owed = 0.0
    g = 0
    while time.monotonic() - start < duration_s and not stop.is_set():
        tick = time.monotonic()
        owed += per_tick
        now = time.time()
        ts = _ts(now)
        while owed >= 1:
            fid = f"LOAD-{g:06d}"
            seq[g] += 1
            pub.publish(f"lifeline/drainage/{fid}/telemetry", TELEMETRY.encode_plain(
                ts, seq[g], [
                    {"sensor": f"{fid}-L{j}", "metric": "water_level",
                     "value": 1.0 + (seq[g] % 7) / 10, "unit": "m"} for j in range(10)]))
            owed -= 1
            g = (g + 1) % gateways
        if tick >= next_mark:
            mark_seq += 1
            breach = mark_seq % 2 == 1  # over the threshold, then back, every second
            t_ms = int(time.time() * 1000)
            t_pub = t_ms / 1000
            if breach:
                probe.published[t_ms] = time.time()
            pub.publish(f"lifeline/drainage/{MARK}/telemetry", TELEMETRY.encode_plain(
                _ts(t_pub), mark_seq,
                [{"sensor": f"{MARK}-L1", "metric": "water_level",
                  "value": 7.0 if breach else 1.0, "unit": "m"}]))
            next_mark += 1
        if tick >= next_sample:
            row: dict[str, Any] = {"t_s": round(tick - start)}
            for name, pid in comps.items():
                cpu, rss = _proc_stats(pid)
                row[name] = {"cpu": round((cpu - last_cpu[name]) / 5, 2),
                             "rss_mb": rss // 2**20}
                last_cpu[name] = cpu
            row["lag"] = {x: procs[x].counters().get("lag", 0) for x in ("processor",
                                                                            "writer")}
            pc = procs["processor"].counters()
            row["processor"].update({k: pc.get(k) for k in (
                "checkpoint_bound_s", "checkpoint_rate_per_s", "state_saves",
                "checkpoints_deferred")})
            ic = procs["ingest"].counters()
            row["ingest"]["received"] = ic.get("received")
            row["ingest"]["accepted_reports"] = ic.get("accepted_reports")
            row["ingest"]["pending_acks"] = ic.get("pending_acks")
            row["ingest"]["acked"] = ic.get("acked")
            samples.append(row)
            next_sample += 5
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    published_for = time.monotonic() - start
    loading.clear()
    budget = {}
    for name in ("ingest", "processor", "writer", "notifier"):
        counters = procs[name].counters()
        stages = sorted({k.rsplit(".", 1)[0] for k in counters if k.startswith("latency.")})
        for stage in stages:
            budget[stage.removeprefix("latency.")] = {
                k: counters.get(f"{stage}.{k}") for k in ("n", "p50_ms", "p99_ms", "max_ms")}
    pub.flush(120)
    # Let the pipeline finish what it was given, then count.
    deadline = time.monotonic() + 300
    progress: tuple[Any, ...] = ()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        i, p, w = (procs[x].counters() for x in ("ingest", "processor", "writer"))
        if (i.get("received", 0) >= pub.published and p.get("lag", 1) == 0
                and w.get("lag", 1) == 0):
            break
        now_progress = (i.get("accepted_reports"), p.get("processed_readings"),
                        w.get("processed_reports"))
        if now_progress != progress:
            progress, still_since = now_progress, time.monotonic()
        elif time.monotonic() - still_since > 30:
            break  # stalled: report what happened rather than wait on
        time.sleep(1)
    drain_s = round(time.monotonic() - start - published_for, 1)
    time.sleep(3)
    stop_alarms.set()
    i, p, w, nt = (procs[x].counters() for x in ("ingest", "processor", "writer", "notifier"))
    pub.close()
    cpu_end = {name: _proc_stats(pid)[0] for name, pid in comps.items()}
    accepted_readings = max(1, i.get("accepted_readings", 0))
    steady = samples[len(samples) // 4:] or samples
    comps_out = {}
    for c in comps:
        cpus = [s[c]["cpu"] for s in steady]
        mem = [s[c]["rss_mb"] for s in samples]
        comps_out[c] = {"cpu_cores_mean": round(statistics.mean(cpus), 2) if cpus else 0,
                        "rss_mb_after_warmup": mem[len(mem) // 4] if mem else 0,
                        "rss_mb_end": mem[-1] if mem else 0}
    return {"published_reports": pub.published, "published_for_s": round(published_for, 1),
            "drain_after_publishing_s": drain_s,
            "ingest": {k: i.get(k, 0) for k in ("received", "accepted_reports",
                                                 "accepted_readings", "rejected_messages",
                                                 "rate_limited")},
            "processor": {k: p.get(k, 0) for k in ("processed_readings", "rejected",
                                                    "late_readings", "state_saves",
                                                    "checkpoints_deferred",
                                                    "checkpoint_bound_s")}
            | {"alarm_events": {k.split(".", 1)[1]: v for k, v in p.items()
                                if k.startswith("alarm_events.")}},
            "writer": {k: w.get(k, 0) for k in ("processed_events", "processed_reports",
                                                 "stored_points",
                                                 "rejected", "sink_retries")},
            "notifier": {k: nt.get(k, 0) for k in ("alarm_events", "messages_sent")},
            "lost_reports": pub.published - i.get("accepted_reports", 0)
            - i.get("rejected_messages", 0),
            "accepted_readings_per_s": round(i.get("accepted_readings", 0) / published_for),
            "max_lag": {x: max((s["lag"][x] for s in samples), default=0)
                        for x in ("processor", "writer")},
            "components": comps_out,
            "idle_cpu_cores": idle,
            # CPU of each component over the whole run (load and drain) per reading
            # accepted, beside the bare chain's figures of the same run.
            "cpu_us_per_reading": {c: round(1e6 * (cpu_end[c] - cpu_start[c])
                                            / accepted_readings, 1) for c in comps},
            "alarm_events_seen": {phase: dict(sorted(c.items())) for phase, c in
                                  alarms.items()},
            # Each service's latency budget per stage (last minute, at the end of the load;
            # services/core/latency.py), as its /counters said before the drain ended.
            "latency_budget": budget,
            "samples": samples}
