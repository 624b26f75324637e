"""Health and counters, served as JSON over HTTP by every service.

``GET /health`` answers 200 with ``{"status": "ok", …}`` while the service works and 503
with the reason when a dependency is down (a *problem*: the service cannot do its job —
readiness fails). A *warning* is something an operator must see that does not stop the
service (an alarm nobody is routed to, a facility's state started afresh): ``status`` is
``"degraded"`` and the answer stays 200. Both clear when the condition no longer holds
(``ok``), or — for warnings about one past event — after their ``ttl_s``. ``config`` names
the version of every configuration file in use (registry, on-call file). ``GET /counters``
gives processed, rejected and lag figures. Ingest serves them with aiohttp directly; Faust
services add the same pages to Faust's own web server.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from schemas.codec import HEALTH


class Counters:
    """Monotonic counters and live gauges, safe to bump from any thread."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        # Named counters exist from the start (at 0), so dashboards see them before the
        # first event of their kind.
        self._values: dict[str, int] = dict.fromkeys(names, 0)
        self._gauges: dict[str, Callable[[], float | int]] = {}
        self.started = time.time()

    def inc(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + n

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def gauge(self, name: str, fn: Callable[[], float | int]) -> None:
        self._gauges[name] = fn

    def snapshot(self) -> dict[str, float | int]:
        with self._lock:
            out: dict[str, float | int] = dict(self._values)
        for name, fn in self._gauges.items():
            try:
                out[name] = fn()
            except Exception:  # noqa: BLE001 — a gauge must never break the health page
                out[name] = -1
        out["uptime_s"] = round(time.time() - self.started, 1)
        return out


class Health:
    """A service's health: named checks that are either ok or carry a problem text."""

    def __init__(self, service: str, counters: Counters) -> None:
        self.service = service
        self.counters = counters
        self._problems: dict[str, str] = {}
        self._warnings: dict[str, tuple[str, float | None]] = {}  # text, expiry (epoch s)
        self._config: dict[str, Callable[[], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def problem(self, check: str, text: str) -> None:
        with self._lock:
            self._problems[check] = text

    def warning(self, check: str, text: str, ttl_s: float | None = None) -> None:
        """Something to see that does not stop the service (200, status "degraded"); kept
        until ``ok(check)`` or, with ``ttl_s``, that many seconds after the last report."""
        with self._lock:
            self._warnings[check] = (text, None if ttl_s is None else time.time() + ttl_s)

    def ok(self, check: str) -> None:
        with self._lock:
            self._problems.pop(check, None)
            self._warnings.pop(check, None)

    def config(self, name: str, describe: Callable[[], dict[str, Any]]) -> None:
        """Report a configuration file's version (see services/core/reload.py)."""
        self._config[name] = describe

    def problems(self) -> dict[str, str]:
        with self._lock:
            return dict(self._problems)

    def warnings(self) -> dict[str, str]:
        now = time.time()
        with self._lock:
            for check in [c for c, (_, exp) in self._warnings.items()
                          if exp is not None and exp <= now]:
                del self._warnings[check]
            return {c: text for c, (text, _) in self._warnings.items()}

    def payload(self) -> tuple[int, dict[str, Any]]:
        problems, warnings = self.problems(), self.warnings()
        status = "degraded" if problems or warnings else "ok"
        body: dict[str, Any] = {"service": self.service, "status": status,
                                "problems": problems, "warnings": warnings,
                                "counters": self.counters.snapshot()}
        if self._config:
            body["config"] = {name: fn() for name, fn in self._config.items()}
        return (503 if problems else 200), body


def instance_id() -> str:
    """This process, as named in pipeline-health records (host and pid)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def health_record(health: Health) -> bytes:
    """The service's status and counters as one ``lifeline.health`` record."""
    code, body = health.payload()
    # healthy: no problem (what readiness answers); warnings are counted beside it.
    return HEALTH.encode({"service": health.service, "instance": instance_id(),
                          "ts": int(time.time() * 1000), "status": body["status"],
                          "healthy": code == 200, "warnings": len(body["warnings"]),
                          "counters": body["counters"]})


def aiohttp_routes(health: Health) -> list[web.RouteDef]:
    async def health_page(_: web.Request) -> web.Response:
        code, body = health.payload()
        return web.json_response(body, status=code)

    async def counters_page(_: web.Request) -> web.Response:
        return web.json_response(health.counters.snapshot())

    return [web.get("/health", health_page), web.get("/counters", counters_page)]


async def serve(health: Health, host: str, port: int) -> web.AppRunner:
    """Start a small aiohttp server with /health and /counters; returns its runner."""
    app = web.Application()
    app.add_routes(aiohttp_routes(health))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
