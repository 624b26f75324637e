"""`lifeline run` — the README's main job — as a person runs it: its own stack, services and
simulator, readings counted and alarms shown, and nothing left running afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.stack.process import alive
from tests.support.stack_helpers import isolated_stack_env

# `lifeline run` starts a stack and services of its own.
pytestmark = pytest.mark.integration


def test_lifeline_run_shows_readings_and_alarms_and_cleans_up(tmp_path: Path) -> None:
    env = isolated_stack_env(str(tmp_path / "state"))
    out = subprocess.run([sys.executable, "-m", "services.cli", "run", "--duration", "30",
                          "--breach-every", "10"], env=env, capture_output=True, text=True,
                         timeout=240, check=False)
    text = out.stdout + out.stderr
    # what the person who ran it reads (not the services' JSON log lines), then the tail
    said = "\n".join(line for line in text.splitlines() if not line.startswith("{"))
    assert out.returncode == 0, said[-3000:] + "\n…\n" + text[-1500:]
    assert "Where the data is:" in text and "curl -sG http://127.0.0.1:" in text
    assert "ALARM raised" in text and "ALARM cleared" in text, text[-3000:]
    # The notifier paged the person on duty through the local receiver, with a link.
    assert "PAGE  → " in text and "acknowledge: http://127.0.0.1:" in text, text[-3000:]
    # What the person who ran it reads: the words, never a rule key (issue 20).
    pages = [line for line in text.splitlines() if "PAGE  → " in line]
    assert all("预警" in p or "已解除" in p for p in pages), pages
    assert not any(key in line for line in pages + [ln for ln in text.splitlines() if "ALARM" in ln]
                   for key in ("value-upper", "value-lower", "rate-", "sum-", "sensor-stuck",
                               "gateway-offline")), pages
    last_status = [line for line in text.splitlines() if "published" in line][-1]
    assert "rejected 0" in last_status and "writer stored 0 points" not in last_status
    import re

    stopped = re.search(r"stopped in ([0-9.]+)s", text)
    assert stopped, text[-3000:]
    # Services stop together while their brokers still run, then the brokers (issue 15).
    assert float(stopped.group(1)) <= 5.0, stopped.group(0)
    assert "Traceback" not in text
    pids = [int(p.read_text().split()[0]) for p in (tmp_path / "state" / "pids").glob("*.pid")]
    assert pids == []  # pid files removed by the clean stop
    # and no stack component of this state folder survives
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "state")], capture_output=True,
                               text=True, check=False).stdout.split()
    assert not [p for p in leftovers if alive(int(p))], leftovers
