"""Services that cannot reach Kafka stop cleanly: ``lifeline ingest`` waiting for the broker
stops on SIGTERM/SIGINT with exit 0 and one ``ingest.stopped`` line; the Faust processor
that cannot reach the broker at start says so in one line and exits 1. Never a traceback
(README: "never a traceback for … an unreachable broker").

Real processes, no stack: the broker and MQTT ports are free ports nothing listens on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from services.stack.manager import free_port

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ROOT / "deploy" / "registry" / "wenzhou-bay.yaml"


def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("LIFELINE_") and k not in ("PYTHONWARNINGS",)}
    e.update(LIFELINE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
             LIFELINE_MQTT_PORT=str(free_port()),
             LIFELINE_INGEST_HEALTH_PORT=str(free_port()),
             LIFELINE_PROCESSOR_HEALTH_PORT=str(free_port()),
             LIFELINE_REGISTRY=str(REGISTRY), LIFELINE_STATE_DIR=str(tmp_path / "state"))
    return e


def events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes],
                  timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if needle in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")[-3000:]
        time.sleep(0.1)
    raise AssertionError(f"no {needle!r} within {timeout}s: "
                         f"{path.read_text(errors='replace')[-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ingest_waiting_for_kafka_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    err = tmp_path / "stderr"
    with err.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "ingest"], cwd=ROOT,
                                env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=sink)
        try:
            # Retrying the broker: the state the stop used to end with a CancelledError.
            wait_for_line(err, '"kafka.unreachable"', proc)
            proc.send_signal(sig)
            rc = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = err.read_text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text and "CancelledError" not in text
    stopped = [e for e in events(text) if e["event"] == "ingest.stopped"]
    assert len(stopped) == 1
    assert stopped[0]["reason"] == "stopped before Kafka could be reached"
    assert not [e for e in events(text) if "exception" in e]


def test_processor_without_a_broker_says_so_in_one_line(tmp_path: Path) -> None:
    e = env(tmp_path)
    res = subprocess.run([sys.executable, "-m", "services.cli", "processor"], cwd=ROOT,
                         env=e, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    logged = events(res.stderr)
    assert not [ev for ev in logged if "exception" in ev]
    [line] = [ev for ev in logged if ev["event"] == "worker.kafka_unreachable"]
    assert line["level"] == "error" and line["service"] == "processor"
    assert line["bootstrap"] == e["LIFELINE_KAFKA_BOOTSTRAP"]
    assert "KafkaConnectionError" in line["error"]
