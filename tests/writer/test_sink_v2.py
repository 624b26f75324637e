"""The production write path (InfluxDB 2.x API via influxdb-client), for real, against
VictoriaMetrics, which serves /api/v2/write (no InfluxDB 2 server can be installed here)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry
from services.core.settings import InfluxSettings
from services.stack.manager import free_port
from services.stack.process import spawn, terminate
from services.writer.points import PointBuilder
from services.writer.sinks import InfluxV2Sink, SinkRejected, SinkUnavailable, make_sink
from tests.support.stack_helpers import wait_for

# A VictoriaMetrics and an HTTP stand-in of the module's own (no stack fixture).
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        pytest.fail("victoria-metrics not installed (scripts/bootstrap.sh installs it)")
    port = free_port()
    d = tmp_path_factory.mktemp("vm")
    proc = spawn([binary, f"-storageDataPath={d / 'data'}", f"-httpListenAddr=127.0.0.1:{port}"],
                 log=Path(d) / "vm.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    wait_for(up, timeout=20, what="victoria-metrics up")
    yield url
    terminate(proc.pid)


def settings(url: str) -> InfluxSettings:
    return InfluxSettings(api="v2", url=url, org="district", bucket="lifeline",
                          token=SecretStr("not-checked-by-victoria-metrics"))


def export(url: str, metric: str) -> list[dict[str, object]]:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=5).close()  # noqa: S310
    q = f"{url}/api/v1/export?match[]={metric}"
    with urllib.request.urlopen(q, timeout=5) as r:  # noqa: S310
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


async def test_v2_sink_writes_points_with_event_time(victoria: str, registry: Registry) -> None:
    sink = make_sink(settings(victoria))
    assert isinstance(sink, InfluxV2Sink)
    # Recent (inside VictoriaMetrics' default one-month retention), at millisecond precision.
    now_ms = int(datetime.now(UTC).timestamp() * 1000) - 3600_000 + 250
    ts = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    batch = ReadingBatch(facility_id="DR-BH-001", kind="drainage", seq=9, received_at=ts,
                         readings=[Reading(sensor="DR-BH-001-L1", metric="water_level",
                                           value=1.25, unit="m", ts=ts)])
    await sink.write(PointBuilder(registry).readings(batch))
    await sink.close()
    series = wait_for(lambda: export(victoria, "reading_value"), what="point exported")
    [s] = series
    assert s["metric"]["facility"] == "DR-BH-001" and s["metric"]["sensor"] == "DR-BH-001-L1"
    assert s["values"] == [1.25] and s["timestamps"] == [now_ms]


async def test_v2_sink_maps_refusals_and_outages(aiohttp_v2: str) -> None:
    # InfluxDB 2 answers a malformed batch with 400 and a JSON body; 503 when overloaded.
    sink = make_sink(settings(aiohttp_v2))
    with pytest.raises(SinkRejected, match="HTTP 400"):
        await sink.write(["bad line"])
    with pytest.raises(SinkUnavailable, match="HTTP 503"):
        await sink.write(["overload value=1 1"])
    await sink.close()
    down = make_sink(settings(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(SinkUnavailable):
        await down.write(["reading,facility=x value=1 1"])
    await down.close()


@pytest.fixture
async def aiohttp_v2() -> Any:
    """A stand-in for InfluxDB 2's /api/v2/write error answers (documented codes only)."""
    from aiohttp import web

    async def write(request: web.Request) -> web.Response:
        assert request.query["org"] == "district" and request.query["bucket"] == "lifeline"
        assert request.query["precision"] == "ms"
        assert request.headers["Authorization"].startswith("Token ")
        body = await request.text()
        if body.startswith("overload"):
            return web.json_response({"code": "unavailable", "message": "busy"}, status=503)
        return web.json_response({"code": "invalid", "message": "unable to parse"}, status=400)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def test_v2_needs_org_and_bucket() -> None:
    with pytest.raises(ValueError, match="LIFELINE_INFLUX_ORG"):
        make_sink(InfluxSettings(api="v2", url="http://127.0.0.1:1"))


async def test_v2_writes_long_term_points_to_the_long_bucket() -> None:
    """Raw readings go to the bucket, alarms and the on-call trail to <bucket>_long — the
    two buckets deploy/influxdb/10-dbrp.sh maps to retention policies raw and long."""
    from aiohttp import web

    seen: list[tuple[str, str, str]] = []

    async def write(request: web.Request) -> web.Response:
        seen.append((request.query["bucket"], request.query["precision"], await request.text()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        sink = make_sink(settings(f"http://127.0.0.1:{port}"))
        await sink.write(["reading,facility=f value=1 1"])
        await sink.write(["alarm_event,facility=f severity=1i 1"], long_term=True)
        await sink.write(["oncall,facility=f ok=true 1000001"], long_term=True, precision="ns")
        await sink.close()
    finally:
        await runner.cleanup()
    assert [(b, p) for b, p, _ in seen] == [("lifeline", "ms"), ("lifeline_long", "ms"),
                                            ("lifeline_long", "ns")]
