"""One facility's working state and its JSON form (the Faust table value).

Everything the engine needs to continue after a restart is here: each sensor's recent
samples as a bounded, time-bucketed window (only as far back as its longest window) and a
coarser long window (windows over 7 days), its newest readings for step rules, its daily
exceedance counts, its learned baseline, its stuck-value timer, and each rule's debounce,
flapping, episode and standing (suppressed, silenced, held by a fault, stale) state. Saved
on every alarm transition and at least every ``checkpoint_interval_s`` of event time.

The saved form carries a version (``"v"``) that is checked: version 1 (raw sample lists, no
standing flags) and version 2 (no long window, steps, counts or baseline) are migrated on
read; a version newer than this code knows is refused with :class:`StateVersionError`,
never silently misread. A state holding none of version 3's parts is written as version 2,
exactly as before: a release that reads version 2 still reads it (rolling upgrade,
rollback) unless the facility uses the new signals.
"""

from __future__ import annotations

import json
from typing import Any

from services.processor.engine.errors import EngineError
from services.processor.engine.history import Baseline, DailyCount, Steps
from services.processor.engine.signals import Window, from_samples

STATE_VERSION = 3
_PLAIN_VERSION = 2  # the version of a state that holds none of version 3's parts
DEFAULT_BUCKET_MS = 60_000


class StateVersionError(EngineError):
    """A saved facility state of a format this code does not know (written by a newer
    release): refused rather than misread."""


def _window_json(w: Window | None) -> list[Any] | None:
    return None if w is None or not len(w) else [w.bucket_ms, w.to_json()]


def _rebucketed(w: Window | None, bucket_ms: int) -> Window:
    """``w`` with the plan's bucket width (re-bucketed after a registry change altered it)."""
    if w is None:
        return Window(bucket_ms)
    return w if w.bucket_ms == bucket_ms else Window.from_json(w.to_json(), bucket_ms)


class SensorState:
    __slots__ = ("baseline", "counts", "last_ts", "last_value", "long_window", "same_since",
                 "steps", "watermark", "window")

    def __init__(self) -> None:
        self.last_ts: int | None = None  # newest in-order reading (ms)
        self.last_value: float | None = None
        self.same_since: int | None = None  # start of the current run of identical values
        self.window: Window | None = None  # recent samples (sensors with windowed rules)
        self.watermark: int = 0  # newest event time seen (ms)
        self.long_window: Window | None = None  # coarse buckets, for windows over 7 days
        self.steps: Steps | None = None  # newest readings (sensors with step rules)
        self.counts: dict[str, DailyCount] | None = None  # by rule key (count rules)
        self.baseline: Baseline | None = None  # learned usual (deviation, night_minimum)

    def window_for(self, bucket_ms: int) -> Window:
        """The sensor's window with the plan's bucket width."""
        w = self.window = _rebucketed(self.window, bucket_ms)
        return w

    def long_window_for(self, bucket_ms: int) -> Window:
        """The sensor's long window with the plan's bucket width."""
        w = self.long_window = _rebucketed(self.long_window, bucket_ms)
        return w

    @property
    def plain(self) -> bool:
        """Holds none of version 3's parts (saved in the version 2 form)."""
        return (self.steps is None and self.counts is None and self.baseline is None
                and (self.long_window is None or not len(self.long_window)))

    def to_json(self) -> list[Any]:
        head = [self.last_ts, self.last_value, self.same_since, self.watermark,
                _window_json(self.window)]
        if self.plain:
            return head
        return [*head, _window_json(self.long_window),
                None if self.steps is None else self.steps.to_json(),
                None if self.counts is None else {k: c.to_json() for k, c in self.counts.items()},
                None if self.baseline is None else self.baseline.to_json()]

    @classmethod
    def from_json(cls, raw: list[Any], version: int) -> SensorState:
        s = cls()
        s.last_ts, s.last_value, s.same_since, s.watermark = raw[0], raw[1], raw[2], raw[3]
        saved = raw[4]
        if version == 1:
            # v1: a raw list of [ts, value] samples.
            if saved:
                s.window = from_samples([(int(t), float(v)) for t, v in saved],
                                        DEFAULT_BUCKET_MS)
        elif saved:
            s.window = Window.from_json(saved[1], int(saved[0]))
        if version >= 3 and len(raw) > 5:
            long, steps, counts, baseline = raw[5:9]
            if long:
                s.long_window = Window.from_json(long[1], int(long[0]))
            s.steps = None if steps is None else Steps.from_json(steps)
            s.counts = None if counts is None else {k: DailyCount.from_json(c)
                                                    for k, c in counts.items()}
            s.baseline = None if baseline is None else Baseline.from_json(baseline)
        return s


class RuleState:
    """Debounced level, pending change, emitted episode, flapping and standing of one rule."""

    __slots__ = ("alarm_id", "danger", "down", "emitted", "flapping", "held_by", "level",
                 "rising", "silenced", "since", "stale", "suppressed", "transitions", "up")

    def __init__(self) -> None:
        self.level: str | None = None  # the rule's debounced level now
        # Runs in progress: severity -> (start ms, readings) for "at least this level"; and
        # (start ms, readings, worst severity seen) for "below the current level".
        self.up: dict[str, tuple[int, int]] = {}
        self.down: dict[str, tuple[int, int, int]] = {}
        self.emitted: str | None = None  # level the world was last told (None: no episode)
        self.alarm_id: str | None = None
        self.since: int = 0  # event time the episode was raised
        self.flapping: bool = False
        self.transitions: list[int] = []  # times of recent level changes (flap detection)
        # Standing, as last told (re-evaluated when what caused it ends):
        self.suppressed: str | None = None  # alarm id of the fault/outage that inhibits it
        self.silenced: bool = False  # inside a maintenance window that covers it
        self.held_by: str | None = None  # alarm id of a fail-dangerous fault holding it
        self.stale: int | None = None  # the gateway is silent since this event time (ms)
        self.rising: bool = False  # its last transition was upwards (raised / escalated)
        self.danger: bool = False  # a sensor fault that began while the sensor was serious

    @property
    def idle(self) -> bool:
        return (self.level is None and self.emitted is None and not self.up
                and not self.down and not self.transitions)

    def to_json(self) -> list[Any]:
        return [self.level, self.up, self.down, None, self.emitted, self.alarm_id, self.since,
                self.flapping, self.transitions, self.suppressed, self.silenced, self.held_by,
                self.stale, self.rising, self.danger]

    @classmethod
    def from_json(cls, raw: list[Any]) -> RuleState:
        r = cls()
        (r.level, up, down, _, r.emitted, r.alarm_id, r.since, r.flapping,
         r.transitions) = raw[:9]
        if len(raw) >= 15:
            (r.suppressed, r.silenced, r.held_by, r.stale, r.rising, r.danger) = raw[9:15]
        r.up = {k: (int(v[0]), int(v[1])) for k, v in up.items()}
        r.down = {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in (down or {}).items()}
        return r


class FacilityState:
    __slots__ = ("checkpoint_ts", "first_ts", "gap_ok", "last_received", "last_seq", "latest_ts",
                 "offline_check_ts", "offline_wall", "resumed_ts", "rules", "sensors")

    def __init__(self) -> None:
        self.sensors: dict[str, SensorState] = {}
        self.rules: dict[str, RuleState] = {}  # "<sensor or facility>|<rule key>"
        self.last_seq: int | None = None
        self.gap_ok: int = 0  # in-order reports since the last gap
        self.last_received: int = 0  # ingest time of the newest report (wall clock, ms)
        self.first_ts: int | None = None  # event time of the first report seen
        self.latest_ts: int = 0  # newest event time of the facility
        self.checkpoint_ts: int = 0  # latest_ts when last saved
        self.resumed_ts: int = 0  # event time the gateway came back after an outage
        self.offline_check_ts: int = 0  # next sensor-offline check (memory only)
        # Wall clock (ms) at which the current gateway outage was raised (0: none, or saved
        # before this field: the alarm's own time is then the wall clock's)
        self.offline_wall: int = 0

    def mark_saved(self) -> None:
        """The state as it is now has been written to the table."""
        self.checkpoint_ts = self.latest_ts

    def sensor(self, sid: str) -> SensorState:
        s = self.sensors.get(sid)
        if s is None:
            s = self.sensors[sid] = SensorState()
        return s

    def rule(self, key: str) -> RuleState:
        r = self.rules.get(key)
        if r is None:
            r = self.rules[key] = RuleState()
        return r

    def active(self, key: str) -> RuleState | None:
        r = self.rules.get(key)
        return r if r is not None and r.emitted is not None else None

    def active_alarms(self) -> dict[str, RuleState]:
        return {k: r for k, r in self.rules.items() if r.emitted is not None}

    def to_json(self) -> dict[str, Any]:
        plain = all(s.plain for s in self.sensors.values())
        return {
            "v": _PLAIN_VERSION if plain else STATE_VERSION,
            "sensors": {k: s.to_json() for k, s in self.sensors.items()},
            "rules": {k: r.to_json() for k, r in self.rules.items() if not r.idle},
            "seq": self.last_seq, "gap_ok": self.gap_ok, "recv": self.last_received,
            "first": self.first_ts, "latest": self.latest_ts, "ck": self.checkpoint_ts,
            "resumed": self.resumed_ts,
            **({"ow": self.offline_wall} if self.offline_wall else {}),
        }

    def dumps(self) -> str:
        """The saved form as compact JSON text (the table value)."""
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, saved: str | None) -> FacilityState:
        """A state from its table value (None or empty: a fresh state); ValueError (not
        JSON), :class:`StateVersionError` or KeyError/TypeError/IndexError (damaged) for
        what cannot be read."""
        return cls.from_json(json.loads(saved) if saved else None)

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> FacilityState:
        f = cls()
        if not raw:
            return f
        version = raw.get("v", 1)
        if not isinstance(version, int) or not 1 <= version <= STATE_VERSION:
            raise StateVersionError(f"saved facility state has version {version!r}; this "
                                    f"release reads versions 1 to {STATE_VERSION}")
        f.sensors = {k: SensorState.from_json(v, version) for k, v in raw["sensors"].items()}
        f.rules = {k: RuleState.from_json(v) for k, v in raw["rules"].items()}
        f.last_seq, f.gap_ok, f.last_received = raw["seq"], raw["gap_ok"], raw["recv"]
        f.first_ts, f.latest_ts, f.checkpoint_ts = raw["first"], raw["latest"], raw["ck"]
        f.resumed_ts = raw.get("resumed", 0)
        f.offline_wall = raw.get("ow", 0)
        return f
