"""Faust app factory and worker runner shared by processor and writer.

Every Faust service gets: the broker flavour's settings (services.core.kafka), its data
folder under the state dir, Faust's web server bound to loopback on the service's health
port with ``/health`` and ``/counters`` pages — and nothing else: Faust's built-in views
(``/table/…`` would list every table's contents, ``/router/…`` the cluster's workers,
``/``, ``/graph``, ``/assignment``, ``/performance``) are off — and JSON logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from services.core.health import Health
from services.core.logging import configure, get_logger, logging_config
from services.core.settings import KafkaSettings, state_dir

TANSU_FETCH_MAX_WAIT_MS = 50


def _short_fetch_wait_on_tansu() -> None:
    """Tansu answers a fetch only when its max wait has passed, even if records arrived
    meanwhile (measured: 450 ms per event at Faust's hard-coded 1,500 ms, 3 ms at 100 ms).
    Faust offers no setting for it, so the worker consumer is given a short wait here —
    only for ``LIFELINE_KAFKA_FLAVOR=tansu``; real Kafka answers as soon as data arrive."""
    from faust.transport.drivers import aiokafka as driver

    thread = driver.AIOKafkaConsumerThread
    if getattr(thread, "_lifeline_short_fetch", False):
        return
    original = thread._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = TANSU_FETCH_MAX_WAIT_MS  # read by Fetcher at start()
        return consumer

    setattr(thread, "_create_worker_consumer", create)  # noqa: B010 — patching a method
    setattr(thread, "_lifeline_short_fetch", True)  # noqa: B010


def make_app(name: str, kafka: KafkaSettings, *, web_port: int, web_host: str = "127.0.0.1",
             **extra: Any) -> faust.App:
    """A Faust app with Lifeline's conventions. ``name`` becomes the consumer group."""
    from services.core import faust_fetch
    from services.core.kafka import faust_kwargs

    faust_fetch.install()
    if kafka.flavor == "tansu":
        _short_fetch_wait_on_tansu()

    datadir = state_dir() / "faust" / name
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"lifeline-{name}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=True,
        web_port=web_port,
        web_bind=web_host,
        web_host=web_host,
        # Faust's built-in views, each behind its own setting (faust.web.base.BLUEPRINT_FLAGS).
        # Lifeline routes nothing through Faust's web (no @app.table_route): /router is unused.
        web_tables_enabled=False,  # /table/<name>/<key>: every table's data, unauthenticated
        web_router_enabled=False,  # /router/…: who owns which key, the other workers' URLs
        web_stats_enabled=False,  # / and /assignment: sensor counters, partition assignment
        web_graph_enabled=False,  # /graph: the worker's service tree
        web_metrics_enabled=False,  # /performance/
        autodiscover=False,
        # Faust's own producer buffers before send; ack latency matters more here.
        stream_buffer_maxsize=4096,
        consumer_auto_offset_reset="earliest",
        **faust_kwargs(kafka),
        **extra,
    )
    without_builtin_views(app)
    return app


def without_builtin_views(app: faust.App) -> None:
    """Drop every built-in Faust blueprint still enabled — the production index at ``/``
    has no setting — so that the web server serves only the pages Lifeline adds.
    Faust's BlueprintManager has no public way to remove one; it keeps them in
    ``_enabled`` until the server starts (``init_server``)."""
    blueprints: Any = app.web.blueprints
    blueprints._enabled = [(prefix, bp) for prefix, bp in blueprints._enabled
                           if not (isinstance(bp, str) and bp.startswith("faust.web.apps."))]


def add_health_pages(app: faust.App, health: Health,
                     refresh: Callable[[], None] | None = None) -> None:
    """Serve ``/health`` and ``/counters`` from Faust's web server."""

    @app.page("/health")
    async def _health(view: View, _request: Request) -> Response:
        if refresh is not None:
            refresh()
        code, body = health.payload()
        return view.json(body, status=code)

    @app.page("/counters")
    async def _counters(view: View, _request: Request) -> Response:
        if refresh is not None:
            refresh()
        return view.json(health.counters.snapshot())


def consumer_lag(app: faust.App, source_topics: tuple[str, ...]) -> int:
    """Records of the source topics not yet committed on this worker's partitions
    (changelog and internal topics are not work waiting to be done)."""
    consumer = getattr(app, "_consumer", None)
    if consumer is None:
        return 0
    lag = 0
    for tp in consumer.assignment():
        if tp.topic not in source_topics:
            continue
        high = consumer.highwater(tp)
        committed = consumer._committed_offset.get(tp)  # Faust keeps no public accessor
        if high is not None:
            lag += max(0, int(high) - int(committed or 0))
    return lag


def report_health(app: faust.App, health: Health, every_s: float) -> None:
    """Publish the service's counters to ``lifeline.health`` every ``every_s`` seconds."""
    from services.core import topics
    from services.core.health import health_record

    target = app.topic(topics.HEALTH, value_type=bytes, value_serializer="raw")

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _report() -> None:
        await target.send(value=health_record(health))


def register_gauges(app: faust.App, health: Health, source_topics: tuple[str, ...]) -> None:
    """Lag and partition assignment on the health page (assigned > 0 means joined)."""

    def assigned() -> int:
        consumer = getattr(app, "_consumer", None)
        return len(consumer.assignment()) if consumer is not None else 0

    health.counters.gauge("lag", lambda: consumer_lag(app, source_topics))
    health.counters.gauge("assigned_partitions", assigned)
    recovery_watchdog(app, health)
    stream_watchdog(app, health, source_topics)


RECOVERY_STALL_S = 30.0
_log = get_logger("lifeline.recovery")


class RecoveryWatch:
    """Restart table recovery that stopped making progress.

    A backstop: after a second worker left, the remaining worker's recovery of the
    partitions it took over sometimes read nothing for minutes. That cause — a Faust fetch
    answered across the rebalance and dropped — is fixed in ``faust_fetch`` (decision
    0013); this guards against any other. Faust restarts recovery on its rebalance signal; this raises
    that signal when the changelog records still to read have not changed for
    ``stall_s``, and reports it on /health meanwhile. A recovery that is slow but moving
    is left alone."""

    def __init__(self, health: Health, stall_s: float = RECOVERY_STALL_S) -> None:
        self.health = health
        self.stall_s = stall_s
        self.remaining: int | None = None
        self.since = 0.0
        self.restarts = 0

    def check(self, recovery: Any, now: float) -> bool:
        """Look at Faust's ``Recovery`` once; True when it was told to restart."""
        remaining = int(recovery.active_remaining_total()) if recovery.in_recovery else 0
        if remaining == 0 or remaining != self.remaining:
            self.remaining, self.since = remaining, now
            if remaining == 0:
                self.health.ok("recovery")
            return False
        stalled = now - self.since
        if stalled < self.stall_s:
            return False
        self.health.problem("recovery", f"table recovery stalled for {stalled:.0f}s with "
                                        f"{remaining} changelog records to read; restarted")
        _log.warning("recovery.stalled_restarting", remaining=remaining,
                     stalled_s=round(stalled))
        self.since = now
        self.restarts += 1
        recovery.signal_recovery_start.set()
        return True


def recovery_watchdog(app: faust.App, health: Health, every_s: float = 5.0) -> RecoveryWatch:
    """Run a :class:`RecoveryWatch` every ``every_s`` (Faust timers run once the worker
    has started; the stall it guards against follows a later rebalance)."""
    import time

    watch = RecoveryWatch(health)

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _watch() -> None:
        tables: Any = app.tables  # the TableManager's recovery is not in Faust's types
        watch.check(tables.recovery, time.monotonic())

    return watch


def partition_ticks(app: faust.App, ticks: Any, source_topic: str, every_s: float) -> None:
    """Every ``every_s``, send the wall clock (epoch ms) to ``ticks`` on each partition of
    ``source_topic`` this worker owns: wall-clock checks then run inside the stream (where
    tables may be written), on the worker that owns the partition."""
    import time

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _tick() -> None:
        consumer = getattr(app, "_consumer", None)
        if consumer is None:
            return
        now = str(int(time.time() * 1000)).encode()
        for tp in consumer.assignment():
            if tp.topic == source_topic:
                await ticks.send(value=now, partition=tp.partition)


def run_worker(app: faust.App, *, loglevel: str = "INFO", service: str) -> None:
    """Run a Faust worker in this process until SIGTERM/SIGINT (blocks)."""
    import mode.loop

    from services.core.logging import parse_level

    mode.loop.use("uvloop")
    configure(loglevel, service=service)
    worker = _DeadlineWorker(
        app,
        loglevel=parse_level(loglevel)[0],
        logging_config=logging_config(loglevel),
        redirect_stdouts=False,
        workdir=Path.cwd(),
    )
    # Faust's terminal spinner sets the root logger to DEBUG (every send then builds a log
    # record: measured at ~3 % of a busy worker); services have no terminal to spin on.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if worker.unreachable:
            raise SystemExit(1) from None
        raise


SHUTDOWN_DEADLINE_S = 10.0


def _exit_after(deadline_s: float, service: str) -> None:
    """Backstop for a shutdown that waits on something gone (a broker stopped first: Faust's
    ``stop_and_shutdown`` then retries for minutes): end the process. At-least-once makes
    that safe — everything not committed is redelivered."""
    import os
    import threading

    def watch() -> None:
        time.sleep(deadline_s)
        get_logger("lifeline.faust").warning("worker.shutdown_deadline", service=service,
                                             seconds=deadline_s)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watch, name="shutdown-deadline", daemon=True).start()


class _DeadlineWorker(faust.Worker):
    """A Faust worker whose SIGTERM/SIGINT shutdown ends within ``SHUTDOWN_DEADLINE_S``,
    and whose start against a broker it cannot reach is one log line and exit 1 (no
    traceback; ``LIFELINE_DEBUG=1`` keeps Faust's)."""

    unreachable = False

    async def start(self) -> None:
        import asyncio
        import os

        from aiokafka.errors import KafkaConnectionError

        try:
            await super().start()
        except KafkaConnectionError as exc:
            if os.environ.get("LIFELINE_DEBUG"):
                raise
            self.unreachable = True
            get_logger("lifeline.faust").error(
                "worker.kafka_unreachable", app=self.app.conf.id,
                bootstrap=",".join(f"{u.host}:{u.port}" for u in self.app.conf.broker),
                error=repr(exc)[:300])
            # What mode's worker treats as a stop, not an error: it shuts down quietly.
            raise asyncio.CancelledError from None

    def _arm(self) -> None:
        if not getattr(self, "_lifeline_deadline", False):
            self._lifeline_deadline = True
            _exit_after(SHUTDOWN_DEADLINE_S, self.app.conf.id)

    def _on_sigterm(self) -> None:
        self._arm()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm()
        super()._on_sigint()


STREAM_STALL_S = 15.0


class StallWatch:
    """Something that should move and has work waiting: ``check`` says when it has not
    moved for ``stall_s`` (then waits ``stall_s`` again before saying so once more)."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.mark: tuple[int, ...] | None = None
        self.since = 0.0
        self.stalls = 0

    def check(self, waiting: bool, position: tuple[int, ...], now: float) -> bool:
        if not waiting or position != self.mark:
            self.mark, self.since = position, now
            return False
        if now - self.since < self.stall_s:
            return False
        self.since = now
        self.stalls += 1
        return True


def stream_watchdog(app: faust.App, health: Health, source_topics: tuple[str, ...],
                    every_s: float = 3.0) -> StallWatch:
    """Resume a worker whose source partitions have records waiting but whose committed
    offsets have not moved for ``STREAM_STALL_S`` outside recovery.

    A backstop like :class:`RecoveryWatch` (the stall seen after a second worker left the
    group was fixed at its cause, decision 0013). The remedy is
    the sequence Faust itself runs after a recovery — seek to the committed offsets,
    resume the partitions and the flow — logged with the consumer's state at the time."""
    import asyncio
    import time

    from aiokafka.errors import KafkaError

    watch = StallWatch(STREAM_STALL_S)

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _watch() -> None:
        consumer: Any = getattr(app, "_consumer", None)
        if consumer is None or app.in_recovery:
            return
        tps = sorted((tp for tp in consumer.assignment() if tp.topic in source_topics),
                     key=lambda tp: (tp.topic, tp.partition))
        committed = tuple(int(consumer._committed_offset.get(tp) or 0) for tp in tps)
        if not tps:
            return
        # Ask the broker: a consumer that stopped fetching also stopped updating the
        # high-water marks it reports (on Tansu the end offset is the last batch's base
        # offset + 1: it still grows with every new batch).
        try:
            # Answered by Faust's consumer thread: if that thread is wedged, say so.
            ends = await asyncio.wait_for(consumer.highwaters(*tps), timeout=10.0)
        except TimeoutError:
            health.problem("stream", "the consumer thread did not answer within 10s")
            _log.warning("stream.consumer_unresponsive", partitions=len(tps),
                         flow_active=consumer.flow_active)
            return
        except (KafkaError, OSError) as exc:  # a broker hiccup is no stall
            _log.info("stream.watch_skipped", error=repr(exc))
            return
        lag = sum(max(0, int(ends.get(tp) or 0) - c) for tp, c in zip(tps, committed, strict=True))
        if not watch.check(lag > 0, committed, time.monotonic()):
            if lag == 0 or watch.stalls == 0:
                health.ok("stream")
            return
        paused = sorted(f"{tp.topic}[{tp.partition}]" for tp in consumer._paused_partitions)
        health.problem("stream", f"{lag} record(s) waiting and nothing committed for "
                                 f"{STREAM_STALL_S:.0f}s; resumed")
        _log.warning("stream.stalled_resuming", lag=lag, flow_active=consumer.flow_active,
                     paused=paused, partitions=len(tps))
        await consumer.perform_seek()
        consumer.resume_partitions(tps)
        app.flow_control.resume()
        consumer.resume_flow()

    return watch
