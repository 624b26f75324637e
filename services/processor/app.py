"""The processor service: ``lifeline.readings`` (+ ticks) → alarm engine →
``lifeline.alarms``. :class:`Processor` builds the Faust app and wires it; what one record
does is in handlers.py, the checkpoint pace and bound in checkpoints.py.

State: each facility's working state lives in memory while this worker owns its partition
and is saved to the changelog-backed table ``alarm_state`` (one entry per facility, the
partition key) on every alarm transition and at least every ``checkpoint_interval_s`` of
event time as the checkpoint pace allows. After a crash the entry is restored and Kafka
redelivers everything after the last committed offset; samples are keyed by event time and
alarm ids are deterministic, so reprocessing neither double-counts a window nor raises an
alarm twice. What a crash can cost is bounded: the window contributions and debounce
progress between the last checkpoint and the last committed offset — ``checkpoint_interval_s``
of event time when the pace keeps up; the bound that really holds is measured and served
as ``checkpoint_bound_s`` (``/counters``, ``/health``; a warning past twice the interval).

Ticks: a timer sends one tick per owned partition to ``lifeline.ticks`` every
``tick_interval_s``; the agent consumes readings and ticks together, so the wall-clock
gateway-offline check runs inside the stream and may write the table.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from mode.types.signals import BaseSignalT

from schemas.registry import Registry, load_registry
from services.core import topics
from services.core.dlq import InternalDeadLetters
from services.core.faust import (
    add_health_pages,
    make_app,
    partition_ticks,
    producer_backlog,
    register_gauges,
    report_health,
)
from services.core.health import Counters, Health
from services.core.logging import get_logger
from services.core.reload import WatchedFile, file_version
from services.processor.checkpoints import CheckpointPacer
from services.processor.config import ProcessorConfig
from services.processor.context_feed import ContextFeed
from services.processor.district_desk import COUNTERS as DISTRICT_COUNTERS
from services.processor.district_desk import DistrictDesk
from services.processor.engine import AlarmEngine
from services.processor.engine.context import SharedContext
from services.processor.handlers import COUNTERS, Handlers, source
from services.processor.handlers import STATE_WARNING_TTL_S as STATE_WARNING_TTL_S

log = get_logger("lifeline.processor")


class Processor:
    """The wired processor worker. ``.app`` (Faust) and ``.health`` as in every service;
    tests reach the agent, the topics (``alarms``, ``dlq``, ``ticks``, ``context_topic``),
    the table (``state``) and the engine through it."""

    def __init__(self, cfg: ProcessorConfig, registry: Registry,
                 registry_version: str | None = None) -> None:
        self.cfg = cfg
        self.app: faust.App = make_app("processor", cfg.kafka, web_port=cfg.processor.health_port,
                                       web_host=cfg.processor.health_host)
        self.health = Health("processor", Counters(*COUNTERS, *DISTRICT_COUNTERS))
        self.source = self._raw(topics.READINGS, topics.TICKS)
        self.alarms = self._raw(topics.ALARMS)
        self.dlq = self._raw(topics.READINGS_DLQ)
        self.ticks = self._raw(topics.TICKS)
        self.context_topic = self._raw(topics.CONTEXT)  # what the other workers need
        self.context = SharedContext()  # shared by every engine of this worker, kept on reload
        # Values are the facility state as compact JSON text: one string per facility in the
        # worker's memory instead of a tree of dicts (about 5x smaller for 100,000 sensors).
        self.state: Any = self.app.Table("alarm_state", default=None, key_type=str,
                                         value_type=str)
        flavor = cfg.kafka.flavor
        pacer = CheckpointPacer(cfg.processor.checkpoint_rate(flavor),
                                cfg.processor.checkpoint_ceiling(flavor),
                                backlog=lambda: producer_backlog(self.app))
        self.handlers = Handlers(AlarmEngine(registry, self.context), self.state, self.health,
                                 alarms=self.alarms, dlq=self.dlq, context=self.context_topic,
                                 pacer=pacer, behind=self.behind)
        self.registry_file = WatchedFile("registry", cfg.common.registry, self._engine_for,
                                         self._use_engine, self.health,
                                         version=registry_version)
        self.feed = ContextFeed(cfg.kafka, self.context, self.health.counters,
                                InternalDeadLetters("processor", self._send_dlq,
                                                    self.health.counters))
        self.districts = DistrictDesk(cfg.kafka, lambda: self.engine.registry, self.alarms,
                                      self.health.counters)
        self.agent: Any = self.app.agent(self.source, name="services.processor.app.evaluate")(
            self._evaluate)
        self._register()

    @property
    def engine(self) -> AlarmEngine:
        return self.handlers.engine

    # ------------------------------------------------------------------ wiring
    def _raw(self, *names: str) -> Any:
        return self.app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw")

    def _register(self) -> None:
        app, cfg, health, handlers = self.app, self.cfg, self.health, self.handlers
        app.on_partitions_revoked.connect(self._revoked)
        partition_ticks(app, self.ticks, topics.READINGS, cfg.processor.tick_interval_s)
        app.timer(cfg.common.reload_check_s)(self._reload)
        app.task(self._context_feed)
        app.task(self._district_desk)
        register_gauges(app, health, (topics.READINGS,))
        report_health(app, health, cfg.common.health_report_s)
        health.counters.gauge("facilities_in_memory", lambda: len(handlers.cache))
        health.counters.gauge("checkpoint_bound_s", handlers.bound_s)
        health.counters.gauge("checkpoint_rate_per_s", lambda: round(handlers.pacer.rate, 1))
        health.counters.gauge("checkpoints_waited_for_broker", lambda: handlers.pacer.waited)
        add_health_pages(app, health, refresh=handlers.check_bound)

    async def _evaluate(self, stream: Any) -> None:
        handlers = self.handlers
        async for event in stream.events():
            msg = event.message
            src = source(msg.topic, msg.partition, msg.offset)
            if msg.topic == topics.TICKS:
                await handlers.tick(msg.key, event.value, src, msg.partition)
            else:
                await handlers.reading(msg.key, event.value, src, msg.partition, msg.offset)

    async def _revoked(self, _app: Any, /, *args: Any, signal: BaseSignalT[Any],
                       **_kw: Any) -> None:
        revoked: set[Any] = args[0] if args else set()
        self.handlers.revoked({tp.partition for tp in revoked if tp.topic == topics.READINGS})

    def behind(self, partition: int) -> bool:
        """More than ``max_lag_for_ticks`` readings events of ``partition`` unprocessed
        (also while the consumer has not started)."""
        try:
            high = self.app.consumer.highwater(TP(topics.READINGS, partition))
        except ConsumerNotStarted:
            return True
        if high is None:
            return False
        done = self.handlers.position.get(partition)
        return (int(high) - 1 - (done if done is not None else -1)
                > self.cfg.processor.max_lag_for_ticks)

    def _engine_for(self, path: Path) -> AlarmEngine:
        # Loaded and compiled in the watcher's thread: a large registry takes seconds.
        return AlarmEngine(load_registry(path), self.context)

    def _use_engine(self, engine: AlarmEngine) -> None:
        # Facility states are kept; alarms of rules the new registry removed are cleared
        # by the engine ("rule removed") on the facility's next report.
        self.handlers.engine = engine
        log.info("processor.registry_in_use", facilities=len(engine.registry.facilities),
                 sensors=engine.registry.sensor_count)

    async def _reload(self) -> None:
        await self.registry_file.check_async()

    async def _send_dlq(self, key: bytes | None, value: bytes) -> Any:
        return await self.dlq.send(key=key, value=value)

    async def _context_feed(self) -> None:
        await self.feed.run()

    async def _district_desk(self) -> None:
        await self.districts.run()


def build(cfg: ProcessorConfig, registry: Registry,
          registry_version: str | None = None) -> Processor:
    """The processor; ``registry_version`` is the digest of the registry file as it was
    when ``registry`` was loaded (services/core/reload.py)."""
    return Processor(cfg, registry, registry_version)


def main() -> None:
    from services.core.faust import run_worker

    cfg = ProcessorConfig()
    version = file_version(cfg.common.registry)  # before loading: a later edit is reloaded
    registry = load_registry(cfg.common.registry)
    proc = build(cfg, registry, version)
    release_free_memory()
    run_worker(proc.app, loglevel=cfg.common.log_level, service="processor")


def release_free_memory() -> None:
    """Return the memory freed after parsing a large registry to the OS (glibc)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
