"""schemas/workorder.py: the work-order lifecycle, its events' fields, ids, deadlines and
escalation, and the codec of ``lifeline.orders``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import codec
from schemas.common import ID_PATTERN
from schemas.kinds import AlarmLevel, FacilityKind
from schemas.topics import BY_NAME, ORDERS
from schemas.workorder import (
    REQUIRED,
    TERMINAL,
    TRANSITIONS,
    DeadlinePolicy,
    OrderAction,
    OrderEvent,
    OrderState,
    TransitionRefused,
    WorkOrder,
    allowed_actions,
    apply,
    event_id_for,
    order_id_for,
)
from services.core import topics as core_topics

S, A = OrderState, OrderAction
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
ALARM = "6f1c1f1e-0000-4c55-9a57-6c1f6e5e0a01"
OID = order_id_for(ALARM)

# The lifecycle as issue 19 and docs/decisions/0021-work-orders.md state it, written out.
EXPECTED: dict[tuple[OrderState | None, OrderAction], OrderState] = {
    (None, A.OPEN): S.OPEN,
    (S.OPEN, A.DISPATCH): S.DISPATCHED,
    (S.RETURNED, A.DISPATCH): S.DISPATCHED,
    (S.DISPATCHED, A.ACCEPT): S.ACCEPTED,
    (S.ACCEPTED, A.START): S.IN_PROGRESS,
    (S.RETURNED, A.START): S.IN_PROGRESS,
    (S.ACCEPTED, A.REPORT): S.REPORTED,
    (S.IN_PROGRESS, A.REPORT): S.REPORTED,
    (S.RETURNED, A.REPORT): S.REPORTED,
    (S.REPORTED, A.VERIFY): S.VERIFIED,
    (S.REPORTED, A.RETURN_): S.RETURNED,
    (S.VERIFIED, A.CLOSE): S.CLOSED,
    (S.OPEN, A.FALSE_ALARM): S.FALSE_ALARM,
    (S.DISPATCHED, A.FALSE_ALARM): S.FALSE_ALARM,
    (S.ACCEPTED, A.FALSE_ALARM): S.FALSE_ALARM,
    (S.IN_PROGRESS, A.FALSE_ALARM): S.FALSE_ALARM,
    (S.REPORTED, A.FALSE_ALARM): S.FALSE_ALARM,
    **{(s, a): s for s in (S.OPEN, S.DISPATCHED, S.ACCEPTED, S.IN_PROGRESS, S.REPORTED,
                           S.VERIFIED, S.RETURNED) for a in (A.ESCALATE, A.COMMENT)},
}

# A shortest way to each state from no order.
PATHS: dict[OrderState, tuple[OrderAction, ...]] = {
    S.OPEN: (A.OPEN,),
    S.DISPATCHED: (A.OPEN, A.DISPATCH),
    S.ACCEPTED: (A.OPEN, A.DISPATCH, A.ACCEPT),
    S.IN_PROGRESS: (A.OPEN, A.DISPATCH, A.ACCEPT, A.START),
    S.REPORTED: (A.OPEN, A.DISPATCH, A.ACCEPT, A.START, A.REPORT),
    S.VERIFIED: (A.OPEN, A.DISPATCH, A.ACCEPT, A.START, A.REPORT, A.VERIFY),
    S.CLOSED: (A.OPEN, A.DISPATCH, A.ACCEPT, A.START, A.REPORT, A.VERIFY, A.CLOSE),
    S.RETURNED: (A.OPEN, A.DISPATCH, A.ACCEPT, A.START, A.REPORT, A.RETURN_),
    S.FALSE_ALARM: (A.OPEN, A.FALSE_ALARM),
}


def _fields(action: OrderAction, at: datetime, escalation: int = 1) -> dict[str, Any]:
    """The fields ``action`` requires, with plausible values."""
    fields: dict[OrderAction, dict[str, Any]] = {
        A.OPEN: {"alarm_id": ALARM, "facility_id": "SITE-LC-001", "level": "orange",
                 "owner_unit": "lc-construction-co", "deadline": at + timedelta(hours=4),
                 "sensor_id": "SITE-LC-001-PM10", "rule": "mean-3600s-upper", "kind": "site",
                 "district": "Lucheng"},
        A.DISPATCH: {"assignee": "wang.wei"},
        A.FALSE_ALARM: {"reason": "sensor cleaned: dust from the calibration"},
        A.RETURN_: {"reason": "PM10 still above the limit"},
        A.ESCALATE: {"escalation": escalation},
    }
    return fields.get(action, {})


def event(action: OrderAction, at: datetime = T0, seq: int = 0, order_id: str = OID,
          actor: str = "ann", escalation: int = 1, **extra: Any) -> OrderEvent:
    fields = {**_fields(action, at, escalation), **extra}
    return OrderEvent(event_id=event_id_for(order_id, action, at, actor, seq),
                      order_id=order_id, action=action, at=at, actor=actor, **fields)


def reach(state: OrderState) -> WorkOrder:
    order: WorkOrder | None = None
    for i, action in enumerate(PATHS[state]):
        order = apply(order, event(action, T0 + timedelta(minutes=i)))
    assert order is not None and order.state is state
    return order


def test_the_transition_table_is_the_lifecycle() -> None:
    assert TRANSITIONS == EXPECTED
    assert {S.CLOSED, S.FALSE_ALARM} == TERMINAL
    assert set(TRANSITIONS.values()) == set(OrderState)  # every state is reachable
    assert all(state not in TERMINAL for state, _ in TRANSITIONS)  # final states take nothing
    assert allowed_actions(S.DISPATCHED) == (A.ACCEPT, A.FALSE_ALARM, A.ESCALATE, A.COMMENT)
    assert allowed_actions(None) == (A.OPEN,)
    assert allowed_actions(S.CLOSED) == ()


@pytest.mark.parametrize(("state", "action"), list(TRANSITIONS), ids=str)
def test_every_allowed_transition(state: OrderState | None, action: OrderAction) -> None:
    before = reach(state) if state is not None else None
    at = T0 + timedelta(hours=1)
    after = apply(before, event(action, at))
    assert after.state is TRANSITIONS[state, action]
    assert after.updated_at == at and after.last_event_id == event(action, at).event_id
    assert after.events == (before.events + 1 if before else 1)
    assert (after.closed_at == at) == (after.state in TERMINAL)


REFUSED = [(s, a) for s in (None, *OrderState) for a in OrderAction if (s, a) not in TRANSITIONS]


@pytest.mark.parametrize(("state", "action"), REFUSED, ids=str)
def test_every_other_pair_is_refused_naming_state_and_action(
        state: OrderState | None, action: OrderAction) -> None:
    before = reach(state) if state is not None else None
    with pytest.raises(TransitionRefused) as err:
        apply(before, event(action, T0 + timedelta(hours=1)))
    text = str(err.value)
    assert text.startswith(f"order {OID}: cannot {action.value} an order that ")
    assert (f"that is {state.value} " if state else "that does not exist") in text
    allowed = ", ".join(allowed_actions(state)) or "none, the order is final"
    assert text.endswith(f"(allowed: {allowed})")
    assert isinstance(err.value, ValueError)


def test_refusal_message_example() -> None:
    with pytest.raises(TransitionRefused, match=re.escape(
            f"order {OID}: cannot verify an order that is dispatched "
            "(allowed: accept, false_alarm, escalate, comment)")):
        apply(reach(S.DISPATCHED), event(A.VERIFY, T0 + timedelta(hours=1)))


@pytest.mark.parametrize(("action", "field"),
                         [(a, f) for a, fields in REQUIRED.items() for f in fields], ids=str)
def test_required_fields_per_action(action: OrderAction, field: str) -> None:
    fields = {k: v for k, v in _fields(action, T0).items() if k != field}
    with pytest.raises(ValidationError, match=f"{field}: required by action {action.value}"):
        OrderEvent(event_id="e1", order_id=OID, action=action, at=T0, actor="ann", **fields)


@pytest.mark.parametrize(("action", "extra", "message"), [
    (A.COMMENT, {"escalation": 2}, "escalation: not used by action comment"),
    (A.VERIFY, {"reason": "x"}, "reason: not used by action verify"),
    (A.REPORT, {"level": "red"}, "level: not used by action report"),
    (A.ACCEPT, {"deadline": T0 + timedelta(hours=1)}, "deadline: not used by action accept"),
    (A.DISPATCH, {"deadline": T0}, "deadline: must be after the event's time"),
    (A.OPEN, {"deadline": T0 - timedelta(seconds=1)}, "deadline: must be after"),
    (A.RETURN_, {"reason": "   "}, "reason"),
    (A.ESCALATE, {"escalation": 0}, "escalation"),
    (A.COMMENT, {"evidence": tuple(f"up-{i}" for i in range(11))}, "evidence"),
    (A.COMMENT, {"evidence": ("../etc/passwd",)}, "evidence"),
    (A.COMMENT, {"note": "x" * 2001}, "note"),
    (A.COMMENT, {"actor": "a" * 81}, "actor"),
    (A.COMMENT, {"actor": "ann\nbob"}, "actor"),
    (A.COMMENT, {"at": datetime(2026, 7, 1, 8, 0)}, "at"),  # naive: refused
    (A.OPEN, {"deadline": datetime(2026, 7, 1, 9, 0)}, "deadline"),
    (A.COMMENT, {"colour": "red"}, "colour"),
])
def test_invalid_events_name_the_field(action: OrderAction, extra: dict[str, Any],
                                       message: str) -> None:
    fields = {"event_id": "e1", "order_id": OID, "action": action, "at": T0, "actor": "ann",
              **_fields(action, T0), **extra}
    with pytest.raises(ValidationError, match=re.escape(message)):
        OrderEvent(**fields)


def test_a_valid_event_of_each_action_is_accepted() -> None:
    for action in OrderAction:
        assert event(action, note="ok", evidence=("up-1",)).action is action


def test_replay_of_the_last_event_changes_nothing_even_when_final() -> None:
    for state in OrderState:
        order = reach(state)
        last = event(PATHS[state][-1], T0 + timedelta(minutes=len(PATHS[state]) - 1))
        assert last.event_id == order.last_event_id
        assert apply(order, last) is order


def test_an_event_for_another_order_is_refused() -> None:
    other = order_id_for("another-alarm")
    with pytest.raises(TransitionRefused, match=f"order {OID}: event .* is for order {other}"):
        apply(reach(S.OPEN), event(A.DISPATCH, order_id=other))


def test_apply_records_what_each_action_carries() -> None:
    order = reach(S.OPEN)
    assert (order.alarm_id, order.facility_id, order.level, order.kind, order.owner_unit) == \
        (ALARM, "SITE-LC-001", AlarmLevel.ORANGE, FacilityKind.SITE, "lc-construction-co")
    assert (order.opened_at, order.deadline, order.escalation) == (T0, T0 + timedelta(hours=4), 0)
    order = apply(order, event(A.ESCALATE, T0 + timedelta(hours=5), escalation=1))
    assert order.escalation == 1 and order.state is S.OPEN
    with pytest.raises(TransitionRefused, match="cannot escalate to 1 an order that is open and "
                                                "already at escalation 1"):
        apply(order, event(A.ESCALATE, T0 + timedelta(hours=6), escalation=1))
    later = T0 + timedelta(hours=6)
    order = apply(order, event(A.DISPATCH, later, owner_unit="lc-district-office",
                               deadline=later + timedelta(hours=2)))
    assert (order.assignee, order.owner_unit, order.deadline, order.escalation) == \
        ("wang.wei", "lc-district-office", later + timedelta(hours=2), 0)  # 督办 restarts
    order = apply(order, event(A.ACCEPT, later, actor="wang.wei"))
    order = apply(order, event(A.REPORT, later, actor="wang.wei", note="sprayed, covered",
                               evidence=("up-1", "up-2")))
    order = apply(order, event(A.RETURN_, later))
    order = apply(order, event(A.REPORT, later, seq=1, actor="wang.wei", note="covered again",
                               evidence=("up-2", "up-3")))
    assert order.report_note == "covered again" and order.evidence == ("up-1", "up-2", "up-3")
    order = apply(order, event(A.VERIFY, later, actor="verifier"))
    closed = apply(order, event(A.CLOSE, later + timedelta(minutes=1)))
    assert closed.closed_at == later + timedelta(minutes=1) and closed.events == 9
    false = apply(reach(S.DISPATCHED), event(A.FALSE_ALARM, later))
    assert (false.state, false.false_alarm_reason, false.closed_at) == \
        (S.FALSE_ALARM, "sensor cleaned: dust from the calibration", later)


def test_ids_are_deterministic() -> None:
    assert order_id_for(ALARM) == order_id_for(ALARM) != order_id_for(ALARM + "x")
    assert re.fullmatch(r"WO-[0-9a-f]{16}", OID) and re.fullmatch(ID_PATTERN, OID)
    base = event_id_for(OID, A.REPORT, T0, "ann")
    assert base == event_id_for(OID, A.REPORT, T0.astimezone(timezone(timedelta(hours=8))), "ann")
    assert re.fullmatch(r"[0-9a-f]{32}", base)
    variants = {event_id_for(order_id_for("x"), A.REPORT, T0, "ann"),
                event_id_for(OID, A.COMMENT, T0, "ann"),
                event_id_for(OID, A.REPORT, T0 + timedelta(milliseconds=1), "ann"),
                event_id_for(OID, A.REPORT, T0, "bob"),
                event_id_for(OID, A.REPORT, T0, "ann", seq=1)}
    assert len(variants) == 5 and base not in variants
    with pytest.raises(ValueError, match="at needs a time zone"):
        event_id_for(OID, A.REPORT, datetime(2026, 7, 1), "ann")


def test_deadline_policy_defaults_overrides_and_settings() -> None:
    policy = DeadlinePolicy()
    assert {lv: policy.hours_for(lv, None) for lv in AlarmLevel} == \
        {AlarmLevel.RED: 2, AlarmLevel.ORANGE: 4, AlarmLevel.YELLOW: 24, AlarmLevel.BLUE: 72}
    assert policy.deadline_for(AlarmLevel.RED, FacilityKind.SITE, T0) == T0 + timedelta(hours=2)
    site = DeadlinePolicy.model_validate_json('{"by_kind": {"site": {"yellow": 12}}}')
    assert site.deadline_for(AlarmLevel.YELLOW, FacilityKind.SITE, T0) == T0 + timedelta(hours=12)
    assert site.deadline_for(AlarmLevel.YELLOW, FacilityKind.BRIDGE, T0) == \
        T0 + timedelta(hours=24)
    assert site.deadline_for(AlarmLevel.RED, FacilityKind.SITE, T0) == T0 + timedelta(hours=2)
    with pytest.raises(ValidationError, match="hours: missing level blue"):
        DeadlinePolicy(hours={"red": 1, "orange": 2, "yellow": 3})
    for bad in ('{"by_kind": {"site": {"red": 0}}}', '{"by_kind": {"ship": {"red": 1}}}',
                '{"hours": {"red": -1, "orange": 2, "yellow": 3, "blue": 4}}', '{"extra": 1}'):
        with pytest.raises(ValidationError):
            DeadlinePolicy.model_validate_json(bad)
    with pytest.raises(ValueError, match="opened_at needs a time zone"):
        policy.deadline_for(AlarmLevel.RED, None, datetime(2026, 7, 1))


def test_overdue_and_escalation_due() -> None:
    policy = DeadlinePolicy()
    order = reach(S.ACCEPTED)  # due at T0 + 4 h
    due = order.deadline
    cases = [(due - timedelta(seconds=1), False, 0), (due, False, 0),
             (due + timedelta(seconds=1), True, 1), (due + timedelta(hours=3), True, 1),
             (due + timedelta(hours=3, seconds=1), True, 2), (due + timedelta(days=9), True, 2)]
    for now, overdue, level in cases:
        assert policy.overdue(order, now) is overdue, now
        assert policy.escalation_due(order, now, step_hours=3) == level, now
    late = due + timedelta(days=1)
    for state in OrderState:
        expected = state not in TERMINAL and state is not S.VERIFIED
        assert policy.overdue(reach(state), late) is expected, state
        assert policy.escalation_due(reach(state), late, 3) == (2 if expected else 0), state
    with pytest.raises(ValueError, match="step_hours must be positive"):
        policy.escalation_due(order, late, 0)
    with pytest.raises(ValueError, match="now needs a time zone"):
        policy.overdue(order, datetime(2026, 7, 2))


def test_codec_and_topic_round_trip() -> None:
    ev = event(A.OPEN, note="自动派单", evidence=("up-1",))
    raw = codec.ORDER_EVENT.encode(ev)
    assert raw == ev.model_dump_json().encode()
    assert codec.ORDER_EVENT.decode(raw) == ev
    assert BY_NAME[ORDERS].codec is codec.ORDER_EVENT and core_topics.ORDERS == ORDERS
    assert BY_NAME[ORDERS].key == "order id"
    with pytest.raises(ValidationError):
        codec.ORDER_EVENT.decode(b'{"action": "open"}')
    order = reach(S.REPORTED)
    assert WorkOrder.model_validate_json(order.model_dump_json()) == order


@st.composite
def _histories(draw: st.DrawFn) -> list[tuple[OrderAction, bool]]:
    """Random actions, each maybe followed by a redelivery of the same event."""
    return draw(st.lists(st.tuples(st.sampled_from(list(OrderAction)), st.booleans()),
                         max_size=25))


@settings(max_examples=300, deadline=None)
@given(_histories())
def test_any_history_stays_in_the_lifecycle(history: list[tuple[OrderAction, bool]]) -> None:
    image = set(TRANSITIONS.values())
    order: WorkOrder | None = None
    applied = 0
    for i, (action, redeliver) in enumerate(history):
        escalation = order.escalation + 1 if order is not None else 1
        ev = event(action, T0 + timedelta(minutes=i), escalation=escalation)
        state = order.state if order is not None else None
        try:
            after = apply(order, ev)
        except TransitionRefused:
            assert (state, action) not in TRANSITIONS
            continue
        assert (state, action) in TRANSITIONS and state not in TERMINAL
        assert after.state in image and after.state is TRANSITIONS[state, action]
        applied += 1
        assert after.events == applied
        if redeliver:
            assert apply(after, ev) is after
        order = after
    if order is not None and order.state in TERMINAL:
        for action in OrderAction:
            with pytest.raises(TransitionRefused, match="allowed: none, the order is final"):
                apply(order, event(action, T0 + timedelta(days=1), escalation=99))
