"""Lifeline's own services as child processes (for ``lifeline run`` and the tests)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.stack.process import spawn, terminate, terminate_all

SERVICES = ("ingest", "processor", "writer")
HEALTH_PORT_ENV = {
    "ingest": "LIFELINE_INGEST_HEALTH_PORT",
    "processor": "LIFELINE_PROCESSOR_HEALTH_PORT",
    "writer": "LIFELINE_WRITER_HEALTH_PORT",
    "notifier": "LIFELINE_NOTIFIER_HEALTH_PORT",
    "orders": "LIFELINE_ORDERS_HEALTH_PORT",
}
# The command line of each service (``python -m services.cli …``).
SERVICE_ARGS = {"orders": ["orders", "serve"]}


def get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 — loopback
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"null")


class ServiceProcess:
    """One Lifeline service run as ``python -m services.cli NAME`` with a given env."""

    def __init__(self, name: str, env: Mapping[str, str], logs: Path, health_port: int,
                 instance: str = "") -> None:
        self.name = name
        self.env = {**os.environ, **env, HEALTH_PORT_ENV[name]: str(health_port)}
        self.log = logs / f"{name}{instance}.log"
        self.health_port = health_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/health"

    def start(self) -> None:
        self.proc = spawn([sys.executable, "-m", "services.cli",
                           *SERVICE_ARGS.get(self.name, [self.name])], log=self.log,
                          env=self.env)

    def health(self) -> tuple[int, Any]:
        try:
            return get_json(self.health_url)
        except (OSError, ValueError):
            return 0, None

    def counters(self) -> dict[str, Any]:
        code, body = self.health()
        return dict(body["counters"]) if code and body else {}

    def wait_ready(self, timeout: float = 60.0, *, ready: Any = None) -> None:
        """Wait until /health answers (any code) and ``ready(body)`` holds, if given."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log}:\n{self.tail()}")
            code, body = self.health()
            if code and (ready is None or ready(body)):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            terminate(self.proc.pid, timeout=timeout)
            self.proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def stop_all(procs: list[ServiceProcess], grace: float = 4.0) -> list[str]:
    """Stop services together (SIGTERM to all, SIGKILL after ``grace``): a Faust worker's
    orderly shutdown needs its broker, so this runs before the stack goes down. Returns
    the names that had to be killed (at-least-once makes that safe, but it is said)."""
    live = {p.proc.pid: p for p in procs if p.proc is not None and p.proc.poll() is None}
    killed = terminate_all(list(live), grace=grace)
    for p in live.values():
        if p.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.proc.wait(1)
    return [live[pid].name for pid in killed]
