"""The messages between arrival and PUBACK: acknowledged in arrival order, bounded in
number and bytes (ingest's backpressure).

Delivery: an MQTT message is acknowledged (PUBACK) only after Kafka acknowledged every
record made from it — the readings batch and/or the dead letter — and acks go out in the
order messages arrived (MQTT 3.1.1 §4.6). A crash anywhere before the PUBACK makes the
broker redeliver from the persistent session; duplicates are harmless downstream because
points are keyed by event time and alarms by deterministic ids. Acks owed on an earlier
connection are not sent on a later one (:meth:`Inflight.reconnected`): the broker
redelivers those messages and their packet ids may be reused.

Backpressure: at most ``max_pending`` messages (and ``max_pending_bytes`` of payload) are
held between arrival and PUBACK. When Kafka is slow or down and that is reached, the
MQTT network thread waits in :meth:`Inflight.arrive` instead of queueing more: ingest
reads nothing from the socket, the broker keeps the rest in the persistent session (and,
if the wait outlasts the keepalive, drops the connection; ingest reconnects and the
broker redelivers everything unacknowledged). Memory stays bounded and nothing
acknowledged is lost. Mosquitto's own window (``max_inflight_messages``) usually binds
first.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from services.core.health import Counters
from services.core.latency import Stage
from services.core.logging import get_logger

log = get_logger("lifeline.ingest")


@dataclass(slots=True)
class Pending:
    """One message owed a PUBACK."""

    mid: int
    qos: int
    generation: int  # the MQTT connection it arrived on
    at: float  # time.monotonic() on arrival
    size: int = 0  # payload bytes (the backpressure bound)
    done: bool = False  # Kafka took its records


class Inflight:
    """Arrivals from paho's network thread, completions on the event loop. Only the
    network thread appends and only the event loop pops (a deque is safe for that); the
    byte count and the wait for room share one condition."""

    def __init__(self, max_pending: int, max_pending_bytes: int, counters: Counters) -> None:
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.counters = counters
        self.queue: deque[Pending] = deque()
        self.bytes = 0  # payload bytes held
        self.paused = False  # the network thread waits for room
        self.closing = False
        self.generation = 0
        self._room = threading.Condition()
        self._last_pause_log = -1e9
        self.acked_after: Stage | None = None  # arrival → PUBACK (the latency budget)
        counters.gauge("pending_acks", lambda: len(self.queue))
        counters.gauge("pending_bytes", lambda: self.bytes)
        counters.gauge("mqtt_paused", lambda: int(self.paused))

    def __len__(self) -> int:
        return len(self.queue)

    def reconnected(self) -> None:
        """A new MQTT connection: what is owed on the earlier one is never acknowledged."""
        self.generation += 1

    def arrive(self, mid: int, qos: int, size: int) -> Pending | None:
        """The entry of a message of ``size`` bytes once there is room for it (the network
        thread waits here); ``None`` when ingest stops meanwhile (left unacknowledged: the
        broker redelivers it)."""
        if not self._wait_for_room(size):
            return None
        entry = Pending(mid, qos, self.generation, time.monotonic(), size)
        self.queue.append(entry)
        return entry

    def _wait_for_room(self, size: int) -> bool:
        """Backpressure: block the MQTT network thread (it then reads nothing more) while
        ``max_pending`` messages or ``max_pending_bytes`` wait for Kafka; ``False`` when
        ingest stops meanwhile. One message always fits into an empty queue."""
        with self._room:
            def room() -> bool:
                return not self.queue or (len(self.queue) < self.max_pending and
                                          self.bytes + size <= self.max_pending_bytes)

            if not room():
                self.paused = True
                self.counters.inc("backpressure_pauses")
                since = time.monotonic()
                if since - self._last_pause_log >= 10.0:  # sustained: one line per 10 s
                    self._last_pause_log = since
                    log.warning("mqtt.paused", pending=len(self.queue),
                                pending_bytes=self.bytes,
                                note="waiting for Kafka; not reading MQTT")
                while not room():
                    if self.closing:
                        self.paused = False
                        return False
                    self._room.wait(0.5)
                self.paused = False
                if time.monotonic() - since >= 1.0:
                    log.info("mqtt.resumed", paused_s=round(time.monotonic() - since, 1))
            self.bytes += size
            return True

    def complete(self, entry: Pending, ack: Callable[[int, int], None]) -> None:
        """Kafka took ``entry``'s records: ``ack`` (mid, qos) every message at the front
        that is complete, in arrival order — those of the current connection with QoS > 0
        — and make room for the network thread."""
        entry.done = True
        popped = freed = 0
        while self.queue and self.queue[0].done:
            e = self.queue.popleft()
            popped += 1
            freed += e.size
            if e.generation == self.generation and e.qos > 0:
                ack(e.mid, e.qos)
                if self.acked_after is not None:
                    self.acked_after.observe(time.monotonic() - e.at)
        if popped:
            with self._room:
                self.bytes -= freed
                if self.paused:  # the MQTT thread waits for room
                    self._room.notify_all()

    def close(self) -> None:
        """Stopping: a network thread waiting for room gives up (its message stays
        unacknowledged, so the broker redelivers it)."""
        with self._room:
            self.closing = True
            self._room.notify_all()

    def oldest_wait(self) -> float | None:
        """Seconds the oldest message has waited for Kafka; ``None`` when none waits."""
        if not self.queue or self.queue[0].done:
            return None
        return time.monotonic() - self.queue[0].at
