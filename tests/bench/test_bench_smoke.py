"""Short versions of the benchmarks: they prove the harness and the no-loss property.
Speed is not asserted here; the figures come from full runs (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

from tests.bench.run import bench_ingest, bench_stack


def test_ingest_benchmark_smoke() -> None:
    r = bench_ingest(reports=2000, per_report=10)
    ing = r["ingest"]
    assert ing["received"] == 2000 and ing["reports_in_kafka"] == 2000 and ing["rejected"] == 0
    assert 0 < ing["records_in_kafka"] <= 2000  # the local stack packs reports
    assert ing["readings_per_s"] > 0 and r["baseline_paho_subscriber"]["received"] == 2000


def test_stack_benchmark_smoke() -> None:
    r = bench_stack(runs=1)
    assert set(r["median_per_component_s"]) == {"mosquitto", "tansu", "influxd", "postgres"}


def test_processor_benchmark_smoke() -> None:
    from tests.bench.processor import bench

    r = bench(facilities=200, events=1000, latency_seconds=4, rate=200)
    assert r["sensors"] == 2000 and r["throughput"]["readings_per_s"] > 0
    lat = r["latency_report_to_alarm"]
    assert lat["alarms_timed"] == lat["reports"] // 100  # every breach became an alarm
    assert r["memory"]["facilities_in_memory"] == 200


def test_writer_benchmark_smoke() -> None:
    from tests.bench.writer import bench

    r = bench(events=500, facilities=100)
    assert r["stored"] == r["points"] == 5000  # every point of the backlog stored
    assert r["baseline_raw_http_5000_point_batches"]["points"] == 5000


def test_notifier_benchmark_smoke() -> None:
    from tests.bench.notifier import bench

    r = bench(alarms=20, rate=10)
    assert r["received"] == 20 and r["rejected_by_receiver"] == 0  # every alarm, signed
    assert r["latency_s"]["p99"] > 0


def test_query_benchmark_smoke() -> None:
    from tests.bench.query import bench

    r = bench(sensors=50, days=2, runs=1)
    assert r["loaded"]["points"] == 50 * 48
    # The rollup answers the same rows as the per-sensor aggregation it replaces.
    rollup, direct = r["panel_on_district_rollup"], r["same_panel_on_per_sensor_hourly"]
    assert rollup["series_rows"] == direct["series_rows"] > 0


def test_simulator_benchmark_smoke() -> None:
    from tests.bench.simulator import bench

    r = bench(scale=2, hours=0.25)
    # dry-day's three kinds (drainage, bridge, sewage) of the example, twice: 245 × 2.
    assert r["sensors"] == 490 and r["readings"] > 0 and r["readings_per_cpu_s"] > 0


def test_load_benchmark_smoke(tmp_path: Path) -> None:
    """`lifeline bench` for 30 s at 300 readings/s: nothing lost, lag bounded, every
    latency path measured — not a speed figure."""
    from services.bench.load import run_bench

    r = run_bench(sensors=3000, interval_s=10, duration_s=30, state=tmp_path,
                  baseline_reports=2000, idle_s=3)
    assert r["lost_reports"] == 0 and r["ingest"]["rejected_messages"] == 0
    assert r["processor"]["processed_readings"] == r["ingest"]["accepted_readings"]
    assert r["writer"]["processed_reports"] == r["ingest"]["accepted_reports"]
    assert 0 < r["writer"]["processed_events"] < r["ingest"]["accepted_reports"]  # packed
    assert max(r["max_lag"].values()) < 2000
    for path in ("alarm", "stored", "notification"):
        assert r[f"latency_publish_to_{path}"]["samples"] >= 10, path
    bare = r["bare_chain"]
    assert bare["reports"] == 2000 and bare["stored"] == bare["readings"] == 20000
    assert r["ratio_to_bare_chain"] > 0 and set(r["cpu_us_per_reading"]) >= {
        "ingest", "processor", "writer", "notifier", "tansu", "influxd", "mosquitto"}
    assert set(bare["cpu_us_per_reading"]) >= {"bare forwarder", "bare store", "tansu", "influxd"}
    # The fixed cost: every component's CPU with the pipeline up and no load.
    assert set(r["idle_cpu_cores"]) == set(r["cpu_us_per_reading"])
    assert all(0 <= v < 2 for v in r["idle_cpu_cores"].values())
    assert r["alarm_events_seen"]["during_load"].get("facility.raised", 0) >= 10
    for stage in ("ingest.mqtt_to_ack", "processor.evaluate", "writer.kafka_to_stored",
                  "notifier.page"):
        assert r["latency_budget"][stage]["n"] > 0, stage
