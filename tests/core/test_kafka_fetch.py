"""``rewind_unreturned`` on a real aiokafka consumer against the local broker: the internals
it reads (subscription state, positions) are the ones this aiokafka version has."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from services.core.faust.fetch import rewind_unreturned
from services.stack.manager import Stack


async def _scenario(bootstrap: str) -> None:
    topic = "lifeline.test-rewind"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for i in range(8):
            await producer.send_and_wait(topic, f"r{i}".encode())
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 2)

        async def fetch(n: int) -> list[int]:
            got: list[int] = []
            while len(got) < n:
                batch = await consumer.getmany(tp, timeout_ms=2000, max_records=n - len(got))
                assert batch, f"nothing fetched after {got}"
                got += [r.offset for r in batch[tp]]
            return got

        first = await consumer.getmany(tp, timeout_ms=2000, max_records=4)
        offsets = [r.offset for r in first[tp]]
        assert offsets and offsets[0] == 2
        assert await consumer.position(tp) == offsets[-1] + 1
        # Put back: the same records come again.
        assert rewind_unreturned(consumer, first) == {tp: 2}
        assert await fetch(len(offsets)) == offsets
        # Moved by someone else after the fetch: that position stands.
        second = await consumer.getmany(tp, timeout_ms=2000, max_records=2)
        consumer.seek(tp, 7)
        assert rewind_unreturned(consumer, second) == {}
        assert await fetch(1) == [7]
        # Unassigned meanwhile: nothing to put back.
        third = {TopicPartition(topic, 5): first[tp]}
        assert rewind_unreturned(consumer, third) == {}
    finally:
        await consumer.stop()


def test_rewind_on_a_real_consumer(stack: Stack) -> None:
    asyncio.run(_scenario(stack.env()["LIFELINE_KAFKA_BOOTSTRAP"]))
