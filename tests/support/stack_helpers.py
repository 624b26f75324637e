"""Helpers for tests against the real local stack."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from schemas.codec import ALARM_EVENT, READING_BATCH
from services.core import topics
from services.core.kafka_tools import read_topic
from services.core.settings import KafkaSettings
from services.stack.manager import Stack

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.25,
             what: str = "condition") -> T:
    """Poll ``fn`` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout}s; last value: {last!r}")


def influx_query(stack: Stack, q: str) -> list[dict[str, Any]]:
    """Run InfluxQL; return the series of the first result (``[]`` when none)."""
    url = (f"http://127.0.0.1:{stack.ports.influx}/query?"
           + urllib.parse.urlencode({"db": "lifeline", "q": q, "epoch": "ms"}))
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    result = body["results"][0]
    if "error" in result:
        raise AssertionError(f"InfluxQL error for {q!r}: {result['error']}")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def influx_count(stack: Stack, where: str, measurement: str = "reading") -> int:
    series = influx_query(stack, f"SELECT count(value) FROM {measurement} WHERE {where}")
    return int(series[0]["values"][0][1]) if series else 0


def topic_records(stack: Stack, topic: str, idle: float = 1.0) -> list[dict[str, Any]]:
    """Every JSON object of ``topic`` so far. Records that break the topic's contract (the
    garbage hostile-input tests put on internal topics of the shared stack,
    test_internal_dlq.py) are left out."""
    out: list[dict[str, Any]] = []

    def keep(value: bytes) -> None:
        # a readings record may be a pack of batches, one per line (ingest's pack.py)
        for piece in READING_BATCH.unpack(value) if topic == topics.READINGS else [value]:
            try:
                if topic == topics.ALARMS:
                    ALARM_EVENT.decode(piece)
                rec = json.loads(piece)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)

    kafka = KafkaSettings(bootstrap=f"127.0.0.1:{stack.ports.kafka}", flavor="tansu")
    asyncio.run(read_topic(kafka, topic, keep, idle_timeout=idle))
    return out


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def report(seq: int, ts_ms: int, readings: list[tuple[str, str, float, str]]) -> bytes:
    return json.dumps({
        "ts": iso_ms(ts_ms), "seq": seq,
        "readings": [{"sensor": s, "metric": m, "value": v, "unit": u}
                     for s, m, v, u in readings]}).encode()


def now_ms() -> int:
    return int(time.time() * 1000)


def isolated_stack_env(state: str) -> dict[str, str]:
    """Environment for a `lifeline` command with its own state folder and free ports."""
    import os

    from services.stack.manager import free_port

    return {**os.environ, "LIFELINE_STATE_DIR": state,
            "LIFELINE_STACK_MQTT_PORT": str(free_port()),
            "LIFELINE_STACK_KAFKA_PORT": str(free_port()),
            "LIFELINE_STACK_INFLUX_PORT": str(free_port()),
            "LIFELINE_STACK_INFLUX_RPC_PORT": str(free_port()),
            "LIFELINE_STACK_POSTGRES_PORT": str(free_port())}


def chromium(env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> Any:
    """Headless Debian Chromium through selenium (the acknowledgement page's tests);
    ``env`` for chromedriver (e.g. a fontconfig), ``extra`` browser flags."""
    import pytest
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.fail("Debian chromium and chromium-driver are not installed "
                    "(scripts/bootstrap.sh installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 *extra):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver, env=env), options=opts)
