"""Per-gateway rate limits that tell a store-and-forward backlog from a flood.

A gateway (the topic's ``{facility_id}``) that was cut off keeps its reports and sends
them all when it is back: hundreds or thousands of reports at once, their event times in
the past and in order. That backlog must be stored completely, at the gateway's pace. A
flood — the same report again and again, many reports for the same or for near-future
event times, or just too much — must not starve the other gateways. The rule, for each
message that passed validation (:meth:`GatewayPolicy.admit`):

1. **Hard cap.** Every gateway has a token bucket of ``hard_rate`` messages per second
   with bursts of ``hard_burst`` (default 500/s and 20,000: two weeks of one report a
   minute, at once). Beyond it a message is limited, backlog or not.
2. **Backlog lane.** A report whose event time is older than ``backlog_min_age_s``
   (60 s) *and* at least ``backlog_min_spacing_s`` (1 s) later than the last report the
   lane admitted for this gateway is admitted, without using the rate below. The lane
   only moves forward, so repeats, reports out of order, and floods whose event times
   stand still or crawl (a thousand reports within one second of event time) do not pass
   it; and since event times must stay in the past, the lane admits at most one report
   per ``backlog_min_spacing_s`` between the backlog's first event time and now (event
   times older than ``max_past_s`` are refused anyway), under the hard cap. A gateway
   sending live reports beside its backlog is fine: they are younger than the minimum
   age and take step 3.
3. **Live rate.** Everything else (live reports, near-now or future event times, the
   reports the lane turned away) shares the gateway's token bucket of ``rate`` per
   second, bursts up to ``burst`` (``LIFELINE_INGEST_GATEWAY_RATE_PER_S`` 20 and
   ``_GATEWAY_BURST`` 1,000).
4. Otherwise the message is **limited**: ingest dead-letters it, reason
   ``rate_limited``, with its raw bytes (one dead letter per message, so ``lifeline dlq
   replay --reason rate_limited`` can bring it back), and acknowledges it only once the
   dead letter is in Kafka. Nothing is acknowledged into nothing.

Messages validation refuses are dead-lettered with their own reason, whatever the rate
(they carry nothing to limit). The dead letters of a flood are as many as its messages:
Kafka takes them at the pace ingest reads MQTT, which its backpressure bounds (inflight.py),
and ingest logs one line per reason, facility and second, not one per message.

The lane's position restarts when ingest reconnects to the broker (the broker then
redelivers every unacknowledged message, older than the position). All per-gateway state
is bounded (least recently seen dropped), so a client inventing topics cannot grow
ingest's memory; in practice only registered facilities reach this point.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.topics import telemetry_topic
from services.core.ratelimit import TokenBuckets

# One bucket per gateway (facility): the plain token bucket, also used on its own.
GatewayLimiter = TokenBuckets

LIVE, BACKLOG, LIMITED = "live", "backlog", "limited"


@dataclass(frozen=True, slots=True)
class Decision:
    lane: str  # LIVE, BACKLOG or LIMITED
    detail: str = ""  # why, when LIMITED

    @property
    def admitted(self) -> bool:
        return self.lane != LIMITED


_LIVE = Decision(LIVE)
_BACKLOG = Decision(BACKLOG)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


class GatewayPolicy:
    """The backlog-or-flood rule of this module, per gateway."""

    def __init__(self, *, rate: float, burst: float, hard_rate: float, hard_burst: float,
                 backlog_min_age_s: float = 60.0, backlog_min_spacing_s: float = 1.0,
                 max_keys: int = 200_000) -> None:
        # The hard cap is never below the live rate: raising the rate (tests, replays of
        # scenarios faster than real time) raises it too.
        self.hard_rate, self.hard_burst = max(hard_rate, rate), max(hard_burst, burst)
        self.live = TokenBuckets(rate, burst, max_keys)
        self.hard = TokenBuckets(self.hard_rate, self.hard_burst, max_keys)
        self.min_age = backlog_min_age_s
        self.spacing = backlog_min_spacing_s
        self.max_keys = max_keys
        self._cursor: OrderedDict[str, float] = OrderedDict()  # gateway -> event time (s)

    def reset_backlogs(self) -> None:
        """Forget every backlog lane's position (after a reconnect: redeliveries)."""
        self._cursor.clear()

    def admit(self, gateway: str, event_time: datetime | None, received_at: datetime,
              now: float) -> Decision:
        """Whether one valid message of ``gateway`` goes on (``now``: monotonic seconds)."""
        if not self.hard.allow(gateway, now):
            return Decision(LIMITED, (
                f"gateway {gateway} over its hard cap ({self.hard_rate:g} msg/s, burst "
                f"{self.hard_burst:g}), backlog or not"))
        et = event_time.timestamp() if event_time is not None else None
        cursor = self._cursor.get(gateway)
        past = et is not None and et <= received_at.timestamp() - self.min_age
        if et is not None and past and (cursor is None or et >= cursor + self.spacing):
            self._cursor[gateway] = et
            self._cursor.move_to_end(gateway)
            if len(self._cursor) > self.max_keys:
                self._cursor.popitem(last=False)
            return _BACKLOG
        if self.live.allow(gateway, now):
            return _LIVE
        if et is None:
            why = "its event time is unknown"
        elif not past:
            why = (f"event time {_iso(et)} is not older than {self.min_age:g}s, so it is "
                   "not a backlog")
        else:
            assert cursor is not None
            why = (f"event time {_iso(et)} is not at least {self.spacing:g}s after the "
                   f"backlog's last ({_iso(cursor)}): a repeat or a flood, not a backlog")
        return Decision(LIMITED, (
            f"gateway {gateway} over its rate ({self.live.rate:g} msg/s, burst "
            f"{self.live.burst:g}) and {why}"))


def gateway_of(topic: str) -> str:
    """The facility of a telemetry topic (the one parser, schemas/topics.py); any other
    topic, cut to 100 characters, is its own gateway."""
    parsed = telemetry_topic(topic)
    return parsed[1] if parsed is not None else topic[:100]
