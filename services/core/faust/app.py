"""The Faust app factory shared by processor, writer and notifier.

Every Faust service gets: the broker flavour's settings (services.core.kafka), its data
folder under the state dir, Faust's web server bound to loopback on the service's health
port with ``/health`` and ``/counters`` pages — and nothing else: Faust's built-in views
(``/table/…`` would list every table's contents, ``/router/…`` the cluster's workers,
``/``, ``/graph``, ``/assignment``, ``/performance``) are off — and JSON logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
from faust.web import Request, Response, View

from services.core.faust.watch import recovery_watchdog, stream_watchdog
from services.core.health import Health
from services.core.settings import KafkaSettings, state_dir


def make_app(name: str, kafka: KafkaSettings, *, web_port: int, web_host: str = "127.0.0.1",
             tansu_fetch_wait_ms: int | None = None, **extra: Any) -> faust.App:
    """A Faust app with Lifeline's conventions. ``name`` becomes the consumer group;
    ``tansu_fetch_wait_ms``: the worker consumer's fetch wait on Tansu (default
    ``fetch.TANSU_FETCH_MAX_WAIT_MS``, 50 ms — what the alarm path needs)."""
    from services.core.faust import fetch
    from services.core.kafka import faust_kwargs

    fetch.install()
    if kafka.flavor == "tansu":
        fetch.short_fetch_wait_on_tansu(tansu_fetch_wait_ms or fetch.TANSU_FETCH_MAX_WAIT_MS)

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


def producer_backlog(app: faust.App) -> int:
    """Messages waiting in the producer's buffer — a table's changelog writes, which Faust
    queues (``send_soon``) and, once more than 100 wait, stops the stream to drain; 0
    before the producer exists."""
    producer = getattr(app, "_producer", None)  # never create one just to look
    if producer is None:
        return 0
    return int(producer.buffer.size)


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


def register_gauges(app: faust.App, health: Health, source_topics: tuple[str, ...],
                    extra_lag: Callable[[], int] | None = None) -> None:
    """Lag and partition assignment on the health page (assigned > 0 means joined).
    ``extra_lag`` adds work waiting outside Faust's consumer (the writer's readings)."""

    def assigned() -> int:
        consumer = getattr(app, "_consumer", None)
        return len(consumer.assignment()) if consumer is not None else 0

    def lag() -> int:
        return consumer_lag(app, source_topics) + (extra_lag() if extra_lag is not None else 0)

    health.counters.gauge("lag", lag)
    health.counters.gauge("assigned_partitions", assigned)
    recovery_watchdog(app, health)
    stream_watchdog(app, health, source_topics)


def partition_ticks(app: faust.App, ticks: Any, source_topic: str, every_s: float) -> None:
    """Every ``every_s``, send the wall clock (epoch ms) to ``ticks`` on each partition of
    ``source_topic`` this worker owns: wall-clock checks then run inside the stream (where
    tables may be written), on the worker that owns the partition."""
    import time

    from schemas.codec import TICK

    @app.timer(every_s)  # type: ignore[untyped-decorator]  # faust's timer is untyped
    async def _tick() -> None:
        consumer = getattr(app, "_consumer", None)
        if consumer is None:
            return
        now = TICK.encode(int(time.time() * 1000))
        for tp in consumer.assignment():
            if tp.topic == source_topic:
                await ticks.send(value=now, partition=tp.partition)


