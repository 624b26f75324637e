"""Reading a Kafka topic from the beginning without a consumer group (tail, demo, tests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.kafka import security_kwargs
from services.core.settings import KafkaSettings


async def read_topic(kafka: KafkaSettings, topic: str, on_value: Callable[[bytes], None], *,
                     limit: int = 0, idle_timeout: float = 0, from_end: bool = False,
                     stop: asyncio.Event | None = None) -> int:
    """Call ``on_value`` for each record of every partition; return how many were read.

    Stops after ``limit`` records, after ``idle_timeout`` seconds without a record, or when
    ``stop`` is set (0 / None: never).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100,
                                **security_kwargs(kafka))
    try:
        await consumer.start()
    except BaseException:  # an unreachable broker: close it, or it complains when collected
        await consumer.stop()
        raise
    count = 0
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer.stop()
            consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None,
                                        enable_auto_commit=False, fetch_max_wait_ms=100,
                                        **security_kwargs(kafka))
            await consumer.start()
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        if from_end:
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            if stop is not None and stop.is_set():
                break
            batch = await consumer.getmany(timeout_ms=200)
            got = False
            for records in batch.values():
                for rec in records:
                    got = True
                    if rec.value is not None:
                        on_value(rec.value)
                    count += 1
                    if limit and count >= limit:
                        return count
            now = loop.time()
            if got:
                last = now
            elif idle_timeout and now - last > idle_timeout:
                break
    finally:
        await consumer.stop()
    return count


def follow_in_thread(kafka: KafkaSettings, topic: str, on_value: Callable[[bytes], None],
                     stop: threading.Event, *, name: str = "follow") -> threading.Thread:
    """Read ``topic`` from its end in a daemon thread of its own (its own event loop) until
    ``stop`` is set — for the demo's console and the bench, which run beside synchronous
    code. Returns the started thread (join it after setting ``stop``)."""

    async def follow() -> None:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():  # noqa: ASYNC110 — bridges a threading.Event
                await asyncio.sleep(0.2)
            done.set()

        watcher = asyncio.create_task(watch())
        await read_topic(kafka, topic, on_value, from_end=True, stop=done)
        watcher.cancel()

    thread = threading.Thread(target=lambda: asyncio.run(follow()), name=name, daemon=True)
    thread.start()
    return thread
