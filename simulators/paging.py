"""What a scenario's alarm events would cost the people on call: the notifier's own
escalation (services.notifier.escalation) and delivery grouping
(services.notifier.grouping) run over the events on the scenario's clock, with the
shipped on-call file.

The people answer as a duty room does: whoever is paged for an alarm acknowledges it
``ack_after_s`` later (None: nobody answers, every chain runs to its end). Escalation is
ticked every ``TICK_S`` of scenario time; a notification is delivered when it is sent (no
channel fails here: delivery failures are the notifier's tests' business).

The figures: alarm episodes that paged (opened a chain) by category; facility alarms
recorded but paged through their district alarm (``grouped_into``, decision 0023);
notifications the escalator decided; messages after grouping; and per person the
messages and the most within any hour. "Grouped pages" (issue 17) is this: in a typhoon
the on-call gets a district's storm as one alarm and a storm of notifications as a few
messages, not a message per manhole.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.oncall import AckRequest, OnCallConfig, OnCallRecord, RecordType, record_id_for
from schemas.registry import Registry
from services.notifier.escalation import Escalator, FacilityOnCall, Notification, OnCall
from services.notifier.grouping import Grouper, grouping_flags

TICK_S = 30.0  # the notifier's escalation tick (scenario seconds)
HOUR_S = 3600.0


@dataclass
class PagingScore:
    ack_after_s: float | None
    paged_episodes: dict[str, int] = field(default_factory=dict)  # by alarm category
    grouped_members: int = 0  # facility alarms paged through their district alarm
    notifications: int = 0
    messages: int = 0
    grouped_messages: int = 0  # messages that carried more than one notification
    per_person: dict[str, int] = field(default_factory=dict)  # messages
    max_per_person_hour: int = 0  # the most messages one person got within an hour
    busiest: str | None = None  # … that person

    def as_dict(self) -> dict[str, Any]:
        return {"ack_after_s": self.ack_after_s, "paged_episodes": self.paged_episodes,
                "grouped_members": self.grouped_members, "notifications": self.notifications,
                "messages": self.messages, "grouped_messages": self.grouped_messages,
                "max_per_person_hour": self.max_per_person_hour, "busiest": self.busiest,
                "per_person": dict(sorted(self.per_person.items()))}


def _ms(t: float) -> int:
    return int(t * 1000)


def simulate_paging(events: list[AlarmEvent], registry: Registry, oncall: OnCallConfig, *,
                    ack_after_s: float | None = 300.0) -> PagingScore:
    """Replay ``events`` (in event time) through the escalator and the grouping."""
    escalator = Escalator(OnCall(oncall, {f.id: f.district for f in registry.facilities}))
    grouper: Grouper[Notification] = Grouper(
        oncall.grouping.policy)
    states: dict[str, FacilityOnCall] = defaultdict(FacilityOnCall)
    score = PagingScore(ack_after_s)
    sent_at: dict[str, deque[float]] = defaultdict(deque)
    paged: Counter[str] = Counter()
    # Scheduled work: (time, order, kind, payload) — acks and flushes of held batches.
    timers: list[tuple[float, int, str, Any]] = []
    order = 0
    next_tick = 0.0
    answering: set[str] = set()  # alarms whose acknowledgement is on its way

    def schedule(at: float, kind: str, payload: Any) -> None:
        nonlocal order
        order += 1
        heapq.heappush(timers, (at, order, kind, payload))

    def deliver(items: list[Notification], now: float) -> None:
        person = items[0].person
        score.messages += 1
        score.grouped_messages += len(items) > 1
        score.per_person[person] = score.per_person.get(person, 0) + 1
        window = sent_at[person]
        window.append(now)
        while window and now - window[0] >= HOUR_S:
            window.popleft()
        if len(window) > score.max_per_person_hour:
            score.max_per_person_hour, score.busiest = len(window), person
        for n in items:
            fs = states[n.facility_id]
            rec = OnCallRecord(
                record_id=record_id_for(RecordType.DELIVERED, n.notification_id),
                type=RecordType.DELIVERED, ts=datetime.fromtimestamp(now, UTC),
                alarm_id=n.alarm_id, facility_id=n.facility_id,
                notification_id=n.notification_id, kind=n.kind, person=n.person)
            escalator.on_outcome(fs, rec, _ms(now))
            ep = fs.episodes.get(n.alarm_id)
            if (ack_after_s is not None and n.kind in ("page", "repeat") and ep is not None
                    and ep.acked_by is None and n.alarm_id not in answering):
                answering.add(n.alarm_id)  # re-opened by a worse level: answered again
                schedule(now + ack_after_s, "ack", n)

    def notify(ns: list[Notification], now: float) -> None:
        for n in ns:
            score.notifications += 1
            key = (n.person, tuple(n.channels))
            offer = grouper.offer(key, n, now, **grouping_flags(n))
            if offer.send:
                deliver(offer.send, now)
            if offer.due is not None:
                schedule(offer.due, "flush", key)

    def run_timers(until: float) -> None:
        while timers and timers[0][0] <= until:
            at, _, kind, payload = heapq.heappop(timers)
            if kind == "flush":
                items = grouper.flush(payload, at)
                if items:
                    deliver(items, at)
            else:
                n: Notification = payload
                answering.discard(n.alarm_id)
                req = AckRequest(alarm_id=n.alarm_id, facility_id=n.facility_id, by=n.person,
                                 via="cli", ts=datetime.fromtimestamp(at, UTC))
                notify(escalator.on_ack(states[n.facility_id], req, _ms(at)).notifications, at)

    def tick(until: float) -> None:
        nonlocal next_tick
        while next_tick <= until:
            run_timers(next_tick)
            for fs in states.values():
                if fs.episodes:
                    notify(escalator.tick(fs, _ms(next_tick)).notifications, next_tick)
            next_tick += TICK_S

    # Event time, then the facility: the same events read back from Kafka's partitions in
    # another interleaving (each facility's in its order), or redelivered, give the same
    # figures.
    ordered = sorted({e.event_id: e for e in events}.values(),
                     key=lambda e: (e.ts, e.facility_id))
    next_tick = ordered[0].ts.timestamp() if ordered else 0.0
    for ev in ordered:
        now = ev.ts.timestamp()
        tick(now)
        run_timers(now)
        if ev.grouped_into is not None and ev.event is AlarmEventType.RAISED:
            score.grouped_members += 1
        fs = states[ev.facility_id]
        had = ev.alarm_id in fs.episodes
        notify(escalator.on_alarm(fs, ev, _ms(now)).notifications, now)
        if not had and ev.alarm_id in fs.episodes:
            paged[ev.category.value] += 1
    if ordered:  # let the last chains and held batches run out (two hours)
        tick(ordered[-1].ts.timestamp() + 2 * HOUR_S)
        run_timers(ordered[-1].ts.timestamp() + 2 * HOUR_S)
    score.paged_episodes = dict(sorted(paged.items()))
    return score
