"""The paging replay (simulators.paging): the notifier's escalation and grouping over a
scenario's alarm events on the scenario's clock, with the example's on-call file."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache

import pytest

from schemas.alarm import AlarmEvent, AlarmEventType, alarm_id_for, event_id_for
from schemas.kinds import AlarmLevel, FacilityKind, Metric
from schemas.oncall import OnCallConfig, load_oncall
from schemas.registry import Registry, load_registry
from simulators.paging import simulate_paging
from tests.support.paths import EXAMPLE_ONCALL, EXAMPLE_REGISTRY

pytestmark = pytest.mark.unit
# A Tuesday 10:00 in Wenzhou: wang.lei, chen.jing or zhou.min has the day shift.
T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC).timestamp()


@cache
def _registry() -> Registry:
    return load_registry(EXAMPLE_REGISTRY)


def _oncall(**grouping: float) -> OnCallConfig:
    cfg = load_oncall(EXAMPLE_ONCALL)
    return cfg.model_copy(update={"grouping": cfg.grouping.model_copy(update=grouping)})


def ev(facility: str, t: float, kind: AlarmEventType, level: AlarmLevel | None,
       started: float) -> AlarmEvent:
    at = datetime.fromtimestamp(T0 + t, UTC)
    aid = alarm_id_for(facility, f"{facility}-L1", "value-upper",
                       datetime.fromtimestamp(T0 + started, UTC))
    return AlarmEvent(
        event_id=event_id_for(aid, kind, level, at), alarm_id=aid, event=kind, level=level,
        previous_level=None, facility_id=facility, kind=FacilityKind.DRAINAGE,
        sensor=f"{facility}-L1", metric=Metric.WATER_LEVEL, rule="value-upper", value=2.0,
        threshold=1.5, unit="m", ts=at, message="m")


def test_an_answered_alarm_costs_one_page_and_its_clear() -> None:
    events = [ev("DR-KG-001", 0, AlarmEventType.RAISED, AlarmLevel.ORANGE, 0),
              ev("DR-KG-001", 3600, AlarmEventType.CLEARED, None, 0)]
    p = simulate_paging(events, _registry(), _oncall(), ack_after_s=300)
    assert p.paged_episodes == {"facility": 1}
    assert p.notifications == 2 and p.messages == 2  # the page; an hour later, the clear
    assert list(p.per_person.values()) == [2]
    assert set(p.per_person) <= {"wang.lei", "chen.jing", "zhou.min"}  # the day shift


def test_an_unanswered_alarm_runs_its_chain_to_the_director() -> None:
    events = [ev("DR-KG-001", 0, AlarmEventType.RAISED, AlarmLevel.ORANGE, 0)]
    p = simulate_paging(events, _registry(), _oncall(), ack_after_s=None)
    # drainage-duty: on duty (page + 1 repeat, 600 s each), the section chief (900 s),
    # then the director — every step within the two hours the replay runs on.
    assert p.per_person.get("xu.chief", 0) >= 1 and p.per_person.get("zheng.director", 0) >= 1
    on_duty = sum(n for person, n in p.per_person.items()
                  if person in ("wang.lei", "chen.jing", "zhou.min"))
    assert on_duty == 2


def test_a_storm_of_manholes_is_grouped_for_the_person_on_duty() -> None:
    fids = [f.id for f in _registry().facilities if f.id.startswith("DR-")][:12]
    events = [ev(fid, 20.0 * i, AlarmEventType.RAISED, AlarmLevel.YELLOW, 20.0 * i)
              for i, fid in enumerate(fids)]
    alone = simulate_paging(events, _registry(), _oncall(window_s=0.0), ack_after_s=300)
    grouped = simulate_paging(events, _registry(), _oncall(), ack_after_s=300)
    assert alone.messages == alone.notifications == len(fids)  # no grouping: one each
    assert grouped.notifications == len(fids)
    # Three at once (0, 20, 40 s); then batches at 70 s (the one of 60 s), 130 s (80–120 s,
    # the window now 60 s) and 250 s (140–220 s, 120 s): six messages, two of several.
    assert (grouped.messages, grouped.grouped_messages) == (6, 2)
