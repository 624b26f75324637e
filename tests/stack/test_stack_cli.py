"""`lifeline stack up | status | down` as an engineer runs it: daemons with pid files,
health, a clean stop that leaves no process behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.stack.process import alive
from tests.support.stack_helpers import isolated_stack_env

# `lifeline stack up` starts the daemons.
pytestmark = pytest.mark.integration


def lifeline(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_stack_up_status_down(tmp_path: Path) -> None:
    env = isolated_stack_env(str(tmp_path / "state"))
    up = lifeline(["stack", "up"], env)
    assert up.returncode == 0, up.stderr
    assert "stack up in" in up.stdout
    state = tmp_path / "state"
    pids = [int((state / "pids" / f"{n}.pid").read_text().split()[0])
            for n in ("mosquitto", "tansu", "influxd", "postgres")]
    try:
        assert all(alive(p) for p in pids)
        assert (state / "stack.env").stat().st_mode & 0o077 == 0  # secrets: owner only
        status = lifeline(["stack", "status"], env)
        assert status.returncode == 0 and status.stdout.count("healthy") == 4, status.stdout
        again = lifeline(["stack", "up"], env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = lifeline(["stack", "down"], env)
    assert down.returncode == 0 and "influxd" in down.stdout
    assert not any(alive(p) for p in pids), "stack down left processes behind"
    after = lifeline(["stack", "status"], env)
    assert after.returncode == 1 and after.stdout.count("stopped") == 4
