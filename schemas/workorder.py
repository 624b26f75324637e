"""Work orders: the closed loop after an alarm (issue 19, docs/decisions/0021-work-orders.md).

The lifecycle a lifeline centre runs — 预警发布 → 研判 → 派单 → 响应处置 → 反馈 → 复核 → 销号 —
as a state machine over events. Every change of an order is an :class:`OrderEvent` on Kafka
topic ``lifeline.orders`` (key = order id), the source of truth; a :class:`WorkOrder` is the
fold of its events with :func:`apply`, which the projector writes to PostgreSQL as the
queryable current state. Everything here is pure: no clock, no I/O.

- :data:`TRANSITIONS` is the whole lifecycle; :func:`allowed_actions` reads it for the page
  and the CLI, and :func:`apply` refuses anything outside it with :class:`TransitionRefused`.
- Ids are deterministic (:func:`order_id_for`, :func:`event_id_for`), so a retried write
  after a crash produces the same records and consumers drop duplicates by id.
- :class:`DeadlinePolicy` says when an order is due and which escalation (督办) is due.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.common import Contract, Identifier, Timestamp, to_epoch_ms
from schemas.errors import LifelineError
from schemas.kinds import AlarmLevel, FacilityKind


class OrderState(StrEnum):
    """Where an order stands. ``closed`` (销号) and ``false_alarm`` are final."""

    OPEN = "open"  # 预警发布: opened from an alarm, not yet dispatched
    DISPATCHED = "dispatched"  # 派单: sent to the owner unit's person
    ACCEPTED = "accepted"  # the person took it
    IN_PROGRESS = "in_progress"  # 响应处置: on site, handling it
    REPORTED = "reported"  # 反馈: the unit says what it did, with evidence
    VERIFIED = "verified"  # 复核: the centre (or the sensor's data) confirms it
    CLOSED = "closed"  # 销号
    RETURNED = "returned"  # verification failed: back to the unit for rework
    FALSE_ALARM = "false_alarm"  # 研判: not a real event (with a reason)


TERMINAL: frozenset[OrderState] = frozenset({OrderState.CLOSED, OrderState.FALSE_ALARM})


class OrderAction(StrEnum):
    """What an event does to an order; ``escalate`` and ``comment`` keep its state."""

    OPEN = "open"
    DISPATCH = "dispatch"
    ACCEPT = "accept"
    START = "start"
    REPORT = "report"
    VERIFY = "verify"
    RETURN_ = "return"
    CLOSE = "close"
    FALSE_ALARM = "false_alarm"
    ESCALATE = "escalate"
    COMMENT = "comment"


_S, _A = OrderState, OrderAction
_KEEPS_STATE = (_A.ESCALATE, _A.COMMENT)

TRANSITIONS: dict[tuple[OrderState | None, OrderAction], OrderState] = {
    (None, _A.OPEN): _S.OPEN,
    (_S.OPEN, _A.DISPATCH): _S.DISPATCHED,
    # A returned order may be dispatched again (another person or unit, a new deadline):
    # the rework is not always for whoever failed it.
    (_S.RETURNED, _A.DISPATCH): _S.DISPATCHED,
    (_S.DISPATCHED, _A.ACCEPT): _S.ACCEPTED,
    (_S.ACCEPTED, _A.START): _S.IN_PROGRESS,
    (_S.RETURNED, _A.START): _S.IN_PROGRESS,  # rework
    (_S.ACCEPTED, _A.REPORT): _S.REPORTED,  # handled at once, no separate start
    (_S.IN_PROGRESS, _A.REPORT): _S.REPORTED,
    (_S.RETURNED, _A.REPORT): _S.REPORTED,  # reworked and reported in one step
    (_S.REPORTED, _A.VERIFY): _S.VERIFIED,
    (_S.REPORTED, _A.RETURN_): _S.RETURNED,
    (_S.VERIFIED, _A.CLOSE): _S.CLOSED,
    **{(s, _A.FALSE_ALARM): _S.FALSE_ALARM
       for s in (_S.OPEN, _S.DISPATCHED, _S.ACCEPTED, _S.IN_PROGRESS, _S.REPORTED)},
    **{(s, a): s for s in OrderState if s not in TERMINAL for a in _KEEPS_STATE},
}
"""(current state or ``None`` for no order yet, action) → next state; nothing else is allowed."""


def allowed_actions(state: OrderState | None) -> tuple[OrderAction, ...]:
    """The actions :data:`TRANSITIONS` allows from ``state``, in the enum's order (what a page
    or the CLI offers; empty for a final state)."""
    return tuple(a for a in OrderAction if (state, a) in TRANSITIONS)


class TransitionRefused(LifelineError, ValueError):
    """An event the order's current state does not allow (or one for another order):
    nothing changes."""


def _label(value: str) -> str:
    if not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not be blank or contain control characters")
    return value


Label = Annotated[str, Field(min_length=1, max_length=80), AfterValidator(_label)]
"""A person id, ``system``, ``verifier``, or an owner unit's id: short, one line."""
Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_label)]
def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Note = Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)]
AlarmId = Annotated[str, Field(min_length=1, max_length=100)]  # as AckRequest.alarm_id

# Per action: the fields an event must carry, and those it may carry besides ``note`` and
# ``evidence`` (which every action may carry). Any other field set is refused: an event
# never carries data that apply() would silently drop.
_OPEN_FIELDS = ("alarm_id", "facility_id", "level", "owner_unit", "deadline")
REQUIRED: dict[OrderAction, tuple[str, ...]] = {
    _A.OPEN: _OPEN_FIELDS,
    _A.DISPATCH: ("assignee",),
    _A.FALSE_ALARM: ("reason",),
    _A.RETURN_: ("reason",),
    _A.ESCALATE: ("escalation",),
}
OPTIONAL: dict[OrderAction, tuple[str, ...]] = {
    _A.OPEN: ("sensor_id", "rule", "kind", "district"),
    _A.DISPATCH: ("deadline", "owner_unit"),
}
_ACTION_FIELDS = ("alarm_id", "facility_id", "sensor_id", "rule", "level", "kind", "district",
                  "owner_unit", "assignee", "deadline", "reason", "escalation")


class OrderEvent(Contract):
    """One change of one order: the value of ``lifeline.orders`` (key = order id)."""

    event_id: Identifier = Field(description="Deterministic id of this event (dedup key), "
                                             "schemas.workorder.event_id_for.")
    order_id: Identifier = Field(description="The order, schemas.workorder.order_id_for.")
    action: OrderAction
    at: Timestamp = Field(description="When it happened (not when it was processed).")
    actor: Label = Field(description="A person id, 'system' (the centre's services) or "
                                     "'verifier' (verification from the sensor's data).")
    note: Note | None = Field(default=None, description="Free text: what was done, a comment.")
    evidence: tuple[Identifier, ...] = Field(default=(), max_length=10, description=(
        "Upload ids (photos) attached to this event."))
    alarm_id: AlarmId | None = Field(default=None, description="open: the alarm episode.")
    facility_id: Identifier | None = Field(default=None, description="open: the facility.")
    sensor_id: Identifier | None = Field(default=None, description="open: the alarm's sensor.")
    rule: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="open: the rule that raised the alarm.")
    level: AlarmLevel | None = Field(default=None, description="open: the alarm's level.")
    kind: FacilityKind | None = Field(default=None, description="open: the facility's kind.")
    district: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="open: the facility's district.")
    owner_unit: Label | None = Field(default=None, description=(
        "open: the unit that owns the facility (权属单位); dispatch: another unit."))
    assignee: Label | None = Field(default=None, description="dispatch: the person sent.")
    deadline: Timestamp | None = Field(default=None, description=(
        "open: when the order is due; dispatch: a new due time (the escalation restarts)."))
    reason: Reason | None = Field(default=None, description="false_alarm, return: why.")
    escalation: Annotated[int, Field(ge=1)] | None = Field(default=None, description=(
        "escalate: the level reached (1 the unit's manager, 2 the bureau's section chief)."))

    @model_validator(mode="after")
    def _fields_of_the_action(self) -> Self:
        required = REQUIRED.get(self.action, ())
        allowed = set(required) | set(OPTIONAL.get(self.action, ()))
        for name in required:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required by action {self.action}")
        for name in _ACTION_FIELDS:
            if name not in allowed and getattr(self, name) is not None:
                raise ValueError(f"{name}: not used by action {self.action}")
        if self.deadline is not None and self.deadline <= self.at:
            raise ValueError("deadline: must be after the event's time")
        return self


class WorkOrder(Contract):
    """An order's current state: the fold of its events with :func:`apply` (the projector's
    row in PostgreSQL)."""

    order_id: Identifier
    state: OrderState
    alarm_id: AlarmId
    facility_id: Identifier
    sensor_id: Identifier | None = None
    rule: str | None = None
    level: AlarmLevel
    kind: FacilityKind | None = None
    district: str | None = None
    owner_unit: Label
    assignee: Label | None = None
    opened_at: Timestamp
    deadline: Timestamp
    updated_at: Timestamp
    last_event_id: Identifier = Field(description="The last event applied (replay detection).")
    events: Annotated[int, Field(ge=1)] = Field(description="Events applied, open included.")
    escalation: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Escalation reached against the current deadline; 0 = none.")
    false_alarm_reason: str | None = None
    report_note: str | None = Field(default=None, description="The last report's text.")
    evidence: tuple[Identifier, ...] = Field(default=(), description=(
        "Every upload id attached to the order's events, first-seen order."))
    closed_at: Timestamp | None = Field(default=None, description=(
        "When the order reached a final state (closed or false_alarm)."))


def _refuse(order: WorkOrder | None, ev: OrderEvent) -> TransitionRefused:
    state = order.state if order is not None else None
    allowed = ", ".join(allowed_actions(state)) or "none, the order is final"
    shown = f"an order that is {state}" if state is not None else "an order that does not exist"
    return TransitionRefused(f"order {ev.order_id}: cannot {ev.action} {shown} "
                             f"(allowed: {allowed})")


def apply(order: WorkOrder | None, ev: OrderEvent) -> WorkOrder:
    """The order after ``ev``; ``order`` is ``None`` before its ``open`` event.

    An event whose ``event_id`` is the order's ``last_event_id`` returns the order unchanged
    (an at-least-once redelivery, in a final state too). Anything :data:`TRANSITIONS` does not
    allow, an event for another order, and an escalation not above the current one raise
    :class:`TransitionRefused`, naming the order, its state and the action."""
    if order is not None:
        if ev.order_id != order.order_id:
            raise TransitionRefused(f"order {order.order_id}: event {ev.event_id} is for order "
                                    f"{ev.order_id}")
        if ev.event_id == order.last_event_id:
            return order
    state = order.state if order is not None else None
    after = TRANSITIONS.get((state, ev.action))
    if after is None:
        raise _refuse(order, ev)
    if order is None:
        return _opened(ev)
    if ev.action is _A.ESCALATE and ev.escalation is not None \
            and ev.escalation <= order.escalation:
        raise TransitionRefused(f"order {order.order_id}: cannot escalate to {ev.escalation} an "
                                f"order that is {state} and already at escalation "
                                f"{order.escalation}")
    changes: dict[str, Any] = {"state": after, "updated_at": ev.at, "last_event_id": ev.event_id,
                               "events": order.events + 1}
    if ev.evidence:
        changes["evidence"] = tuple(dict.fromkeys(order.evidence + ev.evidence))
    if ev.action is _A.DISPATCH:
        changes["assignee"] = ev.assignee
        if ev.owner_unit is not None:
            changes["owner_unit"] = ev.owner_unit
        if ev.deadline is not None:
            changes["deadline"] = ev.deadline
            changes["escalation"] = 0  # 督办 restarts against the new deadline
    elif ev.action is _A.REPORT:
        changes["report_note"] = ev.note
    elif ev.action is _A.ESCALATE:
        changes["escalation"] = ev.escalation
    elif ev.action is _A.FALSE_ALARM:
        changes["false_alarm_reason"] = ev.reason
    if after in TERMINAL:
        changes["closed_at"] = ev.at
    return order.model_copy(update=changes)


def _opened(ev: OrderEvent) -> WorkOrder:
    # OrderEvent's validator guarantees open's required fields: re-validate all the same, so a
    # WorkOrder is never built unchecked.
    return WorkOrder.model_validate({
        "order_id": ev.order_id, "state": OrderState.OPEN, "alarm_id": ev.alarm_id,
        "facility_id": ev.facility_id, "sensor_id": ev.sensor_id, "rule": ev.rule,
        "level": ev.level, "kind": ev.kind, "district": ev.district,
        "owner_unit": ev.owner_unit, "opened_at": ev.at, "deadline": ev.deadline,
        "updated_at": ev.at, "last_event_id": ev.event_id, "events": 1,
        "evidence": tuple(dict.fromkeys(ev.evidence)),
    })


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} needs a time zone (an aware datetime)")
    return value


def order_id_for(alarm_id: str) -> str:
    """The order of alarm episode ``alarm_id``: ``WO-`` and 16 hex digits of its SHA-256, so
    opening an order for the same alarm twice (a retry, a route and an operator) gives one id."""
    return "WO-" + hashlib.sha256(alarm_id.encode()).hexdigest()[:16]


def event_id_for(order_id: str, action: OrderAction, at: datetime, actor: str,
                 seq: int = 0) -> str:
    """The id of one event: 32 hex digits of SHA-256 over the order, action, time (epoch ms),
    actor and ``seq`` (which tells apart two events of one actor and action in the same
    millisecond, e.g. two comments)."""
    name = f"{order_id}|{action.value}|{to_epoch_ms(_aware(at, 'at'))}|{actor}|{seq}"
    return hashlib.sha256(name.encode()).hexdigest()[:32]


Hours = Annotated[float, Field(gt=0, le=24 * 366)]

DEFAULT_HOURS: dict[AlarmLevel, float] = {AlarmLevel.RED: 2, AlarmLevel.ORANGE: 4,
                                          AlarmLevel.YELLOW: 24, AlarmLevel.BLUE: 72}


class DeadlinePolicy(BaseModel):
    """How long an owner unit has to handle an order, by level and optionally by kind.

    The defaults — red 2 h, orange 4 h, yellow 24 h, blue 72 h — are Lifeline's own,
    configurable starting points, not a national standard: a city sets its own from its
    emergency plans (e.g. ``by_kind: {site: {yellow: 12}}`` for dust at construction sites).
    Plain data, so it can be a settings field (JSON in an environment variable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hours: dict[AlarmLevel, Hours] = Field(default_factory=lambda: dict(DEFAULT_HOURS),
                                           description="Hours to the deadline per level.")
    by_kind: dict[FacilityKind, dict[AlarmLevel, Hours]] = Field(
        default_factory=dict, description="Per-kind overrides: {kind: {level: hours}}.")

    @model_validator(mode="after")
    def _every_level(self) -> Self:
        missing = [str(lv) for lv in AlarmLevel if lv not in self.hours]
        if missing:
            raise ValueError(f"hours: missing level {', '.join(missing)}")
        return self

    def hours_for(self, level: AlarmLevel, kind: FacilityKind | None) -> float:
        """The kind's override for ``level`` if any, else the level's hours."""
        override: Mapping[AlarmLevel, float] = (self.by_kind.get(kind, {}) if kind is not None
                                                else {})
        return override.get(level, self.hours[level])

    def deadline_for(self, level: AlarmLevel, kind: FacilityKind | None,
                     opened_at: datetime) -> datetime:
        """When an order of ``level`` at a facility of ``kind`` opened at ``opened_at`` is due."""
        return _aware(opened_at, "opened_at") + timedelta(hours=self.hours_for(level, kind))

    @staticmethod
    def overdue(order: WorkOrder, now: datetime) -> bool:
        """Past its deadline and not handled: not final and not ``verified`` (a verified order
        waits only for the centre's close). Strictly after the deadline."""
        return (order.state not in TERMINAL and order.state is not OrderState.VERIFIED
                and _aware(now, "now") > order.deadline)

    @classmethod
    def escalation_due(cls, order: WorkOrder, now: datetime, step_hours: float) -> int:
        """The escalation (督办) due at ``now``: 0 none (not :meth:`overdue`); 1 the unit's
        manager, once past the deadline; 2 the bureau's section chief, once past the deadline
        plus ``step_hours``. The caller escalates when this is above ``order.escalation``."""
        if not step_hours > 0:
            raise ValueError(f"step_hours must be positive, not {step_hours}")
        if not cls.overdue(order, now):
            return 0
        return 2 if now > order.deadline + timedelta(hours=step_hours) else 1
