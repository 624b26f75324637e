"""Keep records a Faust fetch took across a rebalance (a Faust race, fixed here).

Faust's fetch loop asks aiokafka for records of its active partitions and waits up to a
second for them. aiokafka holds such a call through a rebalance and then answers it with
the *new* assignment's records — including the changelog partitions the new table
recovery has just positioned. Faust, finding its flow stopped by then, drops the whole
batch and seeks back only partitions with committed offsets: changelog partitions have
none, so their records are gone for this recovery, and recovery waits for them forever
(measured on Tansu: about one rebalance in ten after a second worker left; aiokafka's
positions had moved past the changelog while "Recovery message" never appeared for it,
and the same batch's stream partitions were visibly sought back to their commits).

The fix: when a fetch returns while Faust's flow is stopped, put the records back —
seek each returned partition to its first returned offset, unless something else has
moved that partition since (then that seek is the one that counts) — and return nothing.
Decision record: docs/decisions/0013-faust-fetch-across-rebalance.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from services.core.logging import get_logger

_log = get_logger("lifeline.faust")

WaitNextRecords = Callable[[Any, float], Awaitable[tuple[Any, Any]]]


def rewind_unreturned(consumer: Any, records: Mapping[Any, Sequence[Any]]) -> dict[Any, int]:
    """Seek every partition of ``records`` (an aiokafka ``getmany`` result) back to its first
    record, if its position is still just past the last one. Runs on the consumer's own
    event loop. Returns {partition: offset sought}."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    rewound: dict[Any, int] = {}
    for tp, batch in records.items():
        if not batch or assignment is None:
            continue
        state = assignment.state_value(tp)
        if state is None or not state.has_valid_position:
            continue  # revoked meanwhile: the next owner starts from its commit
        if state.position != batch[-1].offset + 1:
            continue  # sought elsewhere after this fetch: that position stands
        consumer.seek(tp, batch[0].offset)
        rewound[tp] = batch[0].offset
    return rewound


def keep_fetched_on_flow_stop(original: WaitNextRecords) -> WaitNextRecords:
    """Wrap ``faust.transport.consumer.Consumer._wait_next_records``: a batch that arrives
    after the flow stopped is put back instead of being dropped by ``getmany``.

    ``getmany`` checks ``flow_active`` right after this returns, with no await between,
    so the check here sees what ``getmany`` would see."""

    async def wait_next_records(self: Any, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109 — Faust's signature
        records, active = await original(self, timeout)
        if not records or self.flow_active:
            return records, active
        thread = self._thread
        aio = thread._ensure_consumer()

        async def rewind() -> dict[Any, int]:
            return rewind_unreturned(aio, records)

        rewound: dict[Any, int] = await thread.call_thread(rewind)
        for tp, offset in rewound.items():
            self._read_offset[tp] = offset if offset else None  # as Faust's own seek()
        if rewound:
            _log.info("consumer.fetch_put_back", partitions=len(rewound),
                      records=sum(len(records[tp]) for tp in rewound),
                      topics=sorted({tp.topic for tp in rewound}))
        return {}, active

    wait_next_records.__wrapped__ = original  # type: ignore[attr-defined]
    return wait_next_records


TANSU_FETCH_MAX_WAIT_MS = 50
_fetch_wait_ms = TANSU_FETCH_MAX_WAIT_MS  # this process's (one Faust app per service)


def short_fetch_wait_on_tansu(wait_ms: int = TANSU_FETCH_MAX_WAIT_MS) -> None:
    """Tansu answers a fetch only when its max wait has passed, even if records arrived
    meanwhile (measured: 450 ms per event at Faust's hard-coded 1,500 ms, 3 ms at 100 ms).
    Faust offers no setting for it, so the worker consumer is given ``wait_ms`` here —
    only for ``LIFELINE_KAFKA_FLAVOR=tansu``; real Kafka answers as soon as data arrive.
    Each fetch costs Tansu about a millisecond of CPU whether or not records came, so a
    service off the alarm path waits longer (issue 16: the writer's 500 ms)."""
    from faust.transport.drivers import aiokafka as driver

    global _fetch_wait_ms
    _fetch_wait_ms = wait_ms
    thread = driver.AIOKafkaConsumerThread
    if getattr(thread, "_lifeline_short_fetch", False):
        return
    original = thread._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _fetch_wait_ms  # read by Fetcher at start()
        return consumer

    setattr(thread, "_create_worker_consumer", create)  # noqa: B010 — patching a method
    setattr(thread, "_lifeline_short_fetch", True)  # noqa: B010


def install() -> None:
    """Patch Faust's consumer once per process (idempotent)."""
    from faust.transport.consumer import Consumer

    current = Consumer._wait_next_records
    if getattr(current, "__wrapped__", None) is not None:
        return
    setattr(Consumer, "_wait_next_records", keep_fetched_on_flow_stop(current))  # noqa: B010
