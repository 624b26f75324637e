"""From a rule's instantaneous level to alarm transitions: duration, flapping, episodes.

``candidate`` is what the rule's condition says for one sample. It becomes the rule's
level only after it held for ``after_s`` of event time and ``after_count`` samples (the
raise settings when it is more severe, the clear settings otherwise). Each level change is
then emitted — unless the alarm came and went ``flap_max`` times within ``flap_window``:
then one ``flapping`` event is emitted, the alarm is held at the worst level seen, and it
``settles`` once the level has been stable for a whole window.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.alarm import AlarmEventType
from schemas.kinds import AlarmLevel
from services.processor.engine.state import RuleState

_SEV: dict[str | None, int] = {None: 0, **{lv.value: lv.severity for lv in AlarmLevel}}


@dataclass(frozen=True, slots=True)
class Timing:
    raise_after_s: float = 0.0
    raise_after_count: int = 1
    clear_after_s: float = 0.0
    clear_after_count: int = 1


IMMEDIATE = Timing()


@dataclass(frozen=True, slots=True)
class Transition:
    event: AlarmEventType
    level: str | None  # after
    previous: str | None
    new_episode: bool


def severity(level: str | None) -> int:
    return _SEV[level]


def level_of(sev: int) -> str | None:
    """The level of a severity (0: none)."""
    return _LEVEL_BY_SEV[sev]


def _change(prev: str | None, new: str | None) -> AlarmEventType:
    if prev is None:
        return AlarmEventType.RAISED
    if new is None:
        return AlarmEventType.CLEARED
    return AlarmEventType.ESCALATED if _SEV[new] > _SEV[prev] else AlarmEventType.DEESCALATED


_LEVEL_BY_SEV: dict[int, str | None] = {0: None, **{lv.severity: lv.value for lv in AlarmLevel}}


def _debounce(rs: RuleState, candidate: str | None, ts: int, timing: Timing) -> bool:
    """Move ``rs.level`` once a change has lasted long enough; True if it moved.

    Raising to level L needs the condition "at least L" to hold for ``raise_after_*``
    (so a value wavering between yellow and red still raises yellow, then red); lowering
    below level L needs "below L" for ``clear_after_*`` and lands on the most severe level
    seen during that run (never lower than the data justify). Runs are kept per level, so
    a step down does not restart the count for the next one.
    """
    cur = _SEV[rs.level]
    cand = _SEV[candidate]
    for sev in range(cur + 1, 5):
        key = str(sev)
        if cand >= sev:
            since, count = rs.up.get(key, (ts, 0))
            rs.up[key] = (since, count + 1)
        else:
            rs.up.pop(key, None)
    for sev in range(1, 5):
        key = str(sev)
        if sev <= cur and cand < sev:
            since, count, worst = rs.down.get(key, (ts, 0, 0))
            rs.down[key] = (since, count + 1, max(worst, cand))
        else:
            rs.down.pop(key, None)
    target = None
    for sev in range(4, cur, -1):
        run = rs.up.get(str(sev))
        if run is not None and ts - run[0] >= timing.raise_after_s * 1000 \
                and run[1] >= timing.raise_after_count:
            target = sev
            break
    if target is None:
        for sev in range(1, cur + 1):
            down = rs.down.get(str(sev))
            if down is not None and ts - down[0] >= timing.clear_after_s * 1000 \
                    and down[1] >= timing.clear_after_count:
                target = down[2]
                break
    if target is None:
        return False
    rs.level = _LEVEL_BY_SEV[target]
    rs.up = {k: v for k, v in rs.up.items() if int(k) > target}
    rs.down = {k: v for k, v in rs.down.items() if int(k) <= target}
    return True


def update(rs: RuleState, candidate: str | None, ts: int, timing: Timing, flap_window_ms: int,
           flap_max: int) -> Transition | None:
    """Feed one evaluation at event time ``ts`` (ms); return the transition to emit, if any."""
    before = rs.level
    changed = _debounce(rs, candidate, ts, timing)
    horizon = ts - flap_window_ms
    # Flapping is about an alarm coming and going, not about moving between levels.
    if changed and (rs.level is None) != (before is None):
        rs.transitions = [*[t for t in rs.transitions if t > horizon][-(flap_max - 1):], ts]
    elif rs.transitions and rs.transitions[0] <= horizon:
        rs.transitions = [t for t in rs.transitions if t > horizon]

    if rs.flapping:
        if changed and _SEV[rs.level] > _SEV[rs.emitted]:
            rs.emitted = rs.level  # held at the worst level seen while flapping
        if rs.transitions:
            return None
        # Stable for a whole window: settle at the real level.
        rs.flapping = False
        prev = rs.emitted
        if rs.level == prev:
            return Transition(AlarmEventType.SETTLED, rs.level, prev, False)
        rs.emitted = rs.level
        return Transition(_change(prev, rs.level), rs.level, prev, False)

    if not changed:
        return None
    prev = rs.emitted
    if len(rs.transitions) >= flap_max and prev is not None:
        rs.flapping = True
        held = rs.level if _SEV[rs.level] > _SEV[prev] else prev
        rs.emitted = held
        return Transition(AlarmEventType.FLAPPING, held, prev, False)
    rs.emitted = rs.level
    return Transition(_change(prev, rs.level), rs.level, prev, prev is None)
