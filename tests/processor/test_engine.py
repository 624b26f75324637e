"""The alarm engine, one semantic at a time (pure: no broker)."""

from __future__ import annotations

import pytest

from schemas.alarm import AlarmCategory
from services.processor.engine import AlarmEngine, FacilityState
from tests.support.engine_helpers import Feeder, by_rule, lv, make_registry, path, sensor

LEVELS = [lv("blue", 1.8, 1.7), lv("yellow", 2.25, 2.15), lv("orange", 2.7, 2.6),
          lv("red", 2.95, 2.85)]


def level_feeder(**rule: object) -> Feeder:
    return Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS, **rule},
                                       rng=(0, 7))))


def test_four_levels_with_hysteresis() -> None:
    f = level_feeder()
    f.series("L", [1.0, 1.8, 1.75, 2.3, 3.0, 2.9, 2.5, 1.72, 1.69])
    assert path(f.events) == [("raised", "blue"), ("escalated", "yellow"), ("escalated", "red"),
                              ("deescalated", "yellow"), ("deescalated", "blue"), ("cleared", None)]
    assert len({e.alarm_id for e in f.events}) == 1
    assert f.events[-1].threshold == 1.7 and f.events[0].category is AlarmCategory.FACILITY


def test_lower_levels() -> None:
    f = Feeder(make_registry(sensor("O", "o2", {"direction": "lower", "levels": [
        lv("yellow", 19.5, 19.8), lv("red", 18.0, 18.5)]}, rng=(0, 30)), kind="sewage"))
    f.series("O", [20.9, 19.4, 17.9, 18.3, 18.6, 19.7, 19.9])
    assert path(f.events) == [("raised", "yellow"), ("escalated", "red"), ("deescalated", "yellow"),
                              ("cleared", None)]


def test_raise_and_clear_after_count() -> None:
    f = level_feeder(raise_after_count=3, clear_after_count=2)
    assert f.series("L", [2.0, 2.0]) == []
    assert path(f.series("L", [2.0], start_s=120)) == [("raised", "blue")]
    assert f.series("L", [1.0], start_s=180) == []
    assert f.series("L", [2.0], start_s=240) == []  # interrupted: counting restarts
    assert path(f.series("L", [1.0, 1.0], start_s=300)) == [("cleared", None)]


def test_raise_after_seconds_on_event_time() -> None:
    f = level_feeder(raise_after_s=120)
    assert f.series("L", [2.0, 2.0], step_s=60) == []
    assert path(f.series("L", [2.0], start_s=120)) == [("raised", "blue")]


def test_rate_of_change_over_window() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {
        "signal": "rate", "window_s": 600, "rate_per_s": 60,
        "levels": [lv("yellow", 0.05, 0.02)]}, rng=(0, 7))))
    rising = [0.5 + 0.1 * i for i in range(10)]  # 0.1 m per minute
    events = f.series("L", rising)
    assert path(events) == [("raised", "yellow")]
    first = events[0]
    assert first.value == pytest.approx(0.1) and first.unit == "m/min"
    assert first.ts.timestamp() - f.events[0].ts.timestamp() == 0
    assert path(f.series("L", [1.4] * 12, start_s=600)) == [("cleared", None)]


def test_rainfall_sums_on_event_time_windows() -> None:
    f = Feeder(make_registry(sensor("R", "rainfall", {
        "signal": "sum", "window_s": 3600, "levels": [lv("blue", 20, 15)]}, rng=(0, 50),
        interval=300)))
    events = f.series("R", [5.0] * 4, step_s=300)  # 20 mm within the hour
    assert path(events) == [("raised", "blue")] and events[0].value == 20.0
    # Dry for an hour: the window empties on event time.
    assert path(f.series("R", [0.0] * 12, start_s=1200, step_s=300)) == [("cleared", None)]


def test_rms_of_acceleration() -> None:
    f = Feeder(make_registry(sensor("A", "acceleration", {
        "signal": "rms", "window_s": 60, "levels": [lv("yellow", 1.5, 1.3)]}, rng=(0, 20),
        interval=10), kind="bridge"))
    assert f.series("A", [0.2] * 6, step_s=10) == []
    assert f.series("A", [2.0, 2.0, 2.0], start_s=60, step_s=10) == []  # RMS 1.42 < 1.5
    assert path(f.series("A", [2.0], start_s=90, step_s=10)) == [("raised", "yellow")]


def composite_feeder(raise_after_s: float = 0) -> Feeder:
    return Feeder(make_registry(
        sensor("H", "h2s", {"levels": [lv("blue", 10, 8)]}, rng=(0, 200)),
        sensor("P", "pump_state", rng=(0, 1), interval=60),
        kind="sewage",
        composites=[{"id": "h2s-pump-off", "level": "orange", "source": "test",
                     "raise_after_s": raise_after_s,
                     "all_of": [{"sensor": "H", "op": ">=", "value": 10},
                                {"sensor": "P", "op": "<=", "value": 0.5}]}]))


def test_composite_rule_across_metrics() -> None:
    f = composite_feeder()
    f.report(0, ("H", 12.0), ("P", 1.0))
    assert by_rule(f.events, "h2s-pump-off") == []
    f.report(60, ("H", 12.0), ("P", 0.0))
    comp = by_rule(f.events, "h2s-pump-off")
    assert path(comp) == [("raised", "orange")]
    assert comp[0].sensor == "F-1" and comp[0].metric is None
    f.report(120, ("H", 12.0), ("P", 1.0))
    assert path(by_rule(f.events, "h2s-pump-off")) == [("raised", "orange"), ("cleared", None)]


def test_composite_with_duration() -> None:
    f = composite_feeder(raise_after_s=120)
    for t in (0, 60):
        f.report(t, ("H", 12.0), ("P", 0.0))
    assert by_rule(f.events, "h2s-pump-off") == []
    f.report(120, ("H", 12.0), ("P", 0.0))
    assert path(by_rule(f.events, "h2s-pump-off")) == [("raised", "orange")]


def test_out_of_range_is_a_sensor_fault_and_inhibits() -> None:
    f = level_feeder()
    f.series("L", [3.0])  # red facility alarm
    f.report(60, ("L", 9.9))  # outside the instrument range [0, 7]
    fault = by_rule(f.events, "sensor-out-of-range")
    assert path(fault) == [("raised", "blue")] and fault[0].category is AlarmCategory.SENSOR
    f.report(120, ("L", 1.0))  # back in range: facility alarm clears, fault clears
    cleared = by_rule(f.events, "value-upper")[-1]
    assert cleared.event.value == "cleared"
    assert path(by_rule(f.events, "sensor-out-of-range")) == [("raised", "blue"), ("cleared", None)]


def test_fault_suppresses_threshold_alarms_of_that_sensor() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7),
                                    stuck_after_s=300)))
    f.series("L", [1.0] * 6)  # identical for 5 minutes: stuck
    stuck = by_rule(f.events, "sensor-stuck")
    assert path(stuck) == [("raised", "blue")]
    f.report(360, ("L", 3.0))  # changes: stuck clears first, then the level alarm is normal
    assert by_rule(f.events, "sensor-stuck")[-1].event.value == "cleared"
    assert by_rule(f.events, "value-upper")[0].suppressed_by is None

    g = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             sensor("Q", "flow", rng=(0, 100))))
    g.report(0, ("L", 1.0), ("Q", 1.0))
    for t in range(60, 301, 60):
        g.report(t, ("Q", 1.0))  # L silent while its gateway reports
    off = by_rule(g.events, "sensor-offline")
    assert path(off) == [("raised", "blue")] and off[0].sensor == "L"
    g.report(360, ("L", 3.0), ("Q", 1.0))
    assert by_rule(g.events, "sensor-offline")[-1].event.value == "cleared"


def test_stuck_sensor_suppresses_a_later_level_alarm() -> None:
    # Stuck at a high value: the stuck fault (5 min) comes before the level alarm (10 min),
    # so the level alarm is recorded as suppressed by it and nobody is paged for it.
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS, "raise_after_s": 600},
                                    rng=(0, 7), stuck_after_s=300)))
    f.series("L", [3.0] * 11)
    stuck = by_rule(f.events, "sensor-stuck")
    level = by_rule(f.events, "value-upper")
    assert path(stuck) == [("raised", "blue")] and path(level) == [("raised", "red")]
    assert level[0].suppressed_by == stuck[0].alarm_id


def test_gateway_offline_by_wall_clock_and_inhibition() -> None:
    f = level_feeder()
    f.report(0, ("L", 1.0))
    assert f.tick(120) == []  # 2 intervals: not yet
    off = f.tick(200)  # > 3 × 60 s silent
    assert path(off) == [("raised", "yellow")] and off[0].category is AlarmCategory.GATEWAY
    assert f.tick(260) == []  # raised once
    events = f.report(300, ("L", 3.0))
    gw = by_rule(events, "gateway-offline")
    assert path(gw) == [("cleared", None)]
    level = by_rule(events, "value-upper")[0]
    assert level.suppressed_by is None  # the gateway is back before the level is evaluated


def test_reports_received_before_the_outage_do_not_clear_it_and_are_stale() -> None:
    f = level_feeder()
    f.report(0, ("L", 1.0))
    f.tick(400)
    # A report that ingest received before the gateway went silent, processed late:
    # it proves nothing about the gateway now. Its alarm is real (a measured red) and is
    # paged — flagged stale, never suppressed by the outage (life safety, decision 0014).
    events = f.report(120, ("L", 3.0), received_s=120)
    assert by_rule(events, "gateway-offline") == []
    level = by_rule(events, "value-upper")[0]
    assert level.suppressed_by is None and level.stale_since is not None
    back = f.report(460, ("L", 1.0), received_s=460)
    assert path(by_rule(back, "gateway-offline")) == [("cleared", None)]


def test_no_sensor_offline_storm_when_a_gateway_returns() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", rng=(0, 7)),
                             sensor("Q", "flow", rng=(0, 100))))
    f.report(0, ("L", 1.0), ("Q", 1.0))
    assert path(f.tick(3000)) == [("raised", "yellow")]
    events = f.report(3600, ("Q", 1.0))  # back after an hour, first report without L
    assert by_rule(events, "sensor-offline") == []
    later = [e for t in range(3660, 3900, 60) for e in f.report(t, ("Q", 1.0))]
    assert path(by_rule(later, "sensor-offline")) == [("raised", "blue")]  # now L is missing


def test_seq_gaps() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", rng=(0, 7)),
                             policy={"gap_clear_reports": 3}))
    f.report(0, ("L", 1.0), seq=1)
    f.report(60, ("L", 1.0), seq=2)
    gap = f.report(120, ("L", 1.0), seq=5)
    assert path(gap) == [("raised", "blue")] and gap[0].value == 2.0
    f.report(180, ("L", 1.0), seq=5)  # duplicate: ignored
    f.report(240, ("L", 1.0), seq=6)
    f.report(300, ("L", 1.0), seq=7)
    cleared = f.report(360, ("L", 1.0), seq=8)
    assert path(cleared) == [("cleared", None)]
    assert f.report(420, ("L", 1.0), seq=1) == []  # gateway restart: counter reset, no gap


def test_flapping_is_held_and_settles() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": [lv("blue", 2.0)]},
                                    rng=(0, 7)),
                             policy={"flap_window_s": 600, "flap_max_transitions": 4}))
    f.series("L", [2.1, 1.0, 2.1, 1.0, 2.1, 1.0, 2.1, 1.0], step_s=30)
    assert path(f.events) == [("raised", "blue"), ("cleared", None), ("raised", "blue"),
                              ("flapping", "blue")]
    assert f.events[-1].flapping
    # Stable (inactive) for a whole window: settles by clearing the held alarm.
    f.series("L", [1.0] * 12, start_s=240, step_s=60)
    assert path(f.events)[-1] == ("cleared", None) and not f.events[-1].flapping
    assert len(f.events) == 5


def test_maintenance_window_crossing_midnight_local_time() -> None:
    # 22:00–02:00 Asia/Shanghai = 14:00–18:00 UTC; T0 is 00:00 UTC (08:00 local).
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             maintenance=[{"reason": "night works", "daily_from": "22:00",
                                           "daily_to": "02:00", "silence_up_to": "red"}]))
    day = f.series("L", [3.0, 1.0], start_s=0)  # 08:00 local: not silenced
    assert [e.silenced for e in day] == [False, False]
    night = f.series("L", [3.0, 1.0], start_s=17 * 3600)  # 01:00 local next day: silenced
    assert [e.silenced for e in night] == [True, True]
    late = f.series("L", [3.0, 1.0], start_s=18 * 3600 + 60)  # 02:01 local: over
    assert [e.silenced for e in late] == [False, False]


def test_maintenance_window_days_name_the_start_day() -> None:
    # 2026-07-01 is a Wednesday. Window on Wednesdays 23:00–01:00 local.
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             maintenance=[{"reason": "xyz", "daily_from": "23:00",
                                           "daily_to": "01:00", "days": ["wed"],
                                           "silence_up_to": "red"}]))
    thursday_0030 = 16 * 3600 + 30 * 60  # 00:30 local on Thursday = Wednesday's window
    assert [e.silenced for e in f.series("L", [3.0, 1.0], start_s=thursday_0030)] == [True, True]
    friday_0030 = thursday_0030 + 86400  # Thursday's window: not configured
    assert [e.silenced for e in f.series("L", [3.0, 1.0], start_s=friday_0030)] == [False, False]


def test_late_and_out_of_order_data() -> None:
    f = Feeder(make_registry(sensor("R", "rainfall", {
        "signal": "sum", "window_s": 3600, "levels": [lv("blue", 20, 15)]}, rng=(0, 50)),
        policy={"allowed_lateness_s": 600}))
    f.report(1800, ("R", 10.0))
    f.report(1500, ("R", 6.0))  # 5 min late: within lateness, counts in the window
    assert f.outcomes[-1].late == []
    late = f.report(600, ("R", 9.0))  # 20 min older than the newest: refused
    assert late == [] and f.outcomes[-1].late[0].reason.value == "late"
    assert "allowed lateness 600s" in f.outcomes[-1].late[0].detail
    events = f.report(1900, ("R", 5.0))  # 10 + 6 + 5 = 21 mm: the late 9 mm is not counted
    assert path(events) == [("raised", "blue")] and events[0].value == 21.0


def test_replay_after_restore_is_idempotent() -> None:
    reg = make_registry(sensor("L", "water_level", {"levels": LEVELS, "raise_after_count": 2},
                               rng=(0, 7)))
    f = Feeder(reg)
    f.series("L", [1.0, 2.0, 2.0, 3.0, 3.0])
    saved = FacilityState.from_json(f.state.to_json())
    # Kafka redelivers the last three reports after a crash: nothing new is emitted.
    g = Feeder(reg)
    g.state = saved
    assert g.series("L", [2.0, 3.0, 3.0], start_s=120) == []
    cleared = g.series("L", [1.0, 1.0], start_s=300)
    assert path(cleared) == [("cleared", None)]
    assert cleared[0].alarm_id == f.events[0].alarm_id  # the same episode, not a new one


def test_state_round_trip_mid_episode_continues_identically() -> None:
    reg = make_registry(sensor("R", "rainfall", {
        "signal": "sum", "window_s": 3600, "levels": [lv("blue", 20, 15)],
        "raise_after_count": 2}, rng=(0, 50)))
    values = [4.0, 5.0, 6.0, 7.0, 0.0, 0.0, 0.0]
    straight = Feeder(reg)
    straight.series("R", values, step_s=300)
    split = Feeder(reg)
    split.series("R", values[:3], step_s=300)
    split.state = FacilityState.from_json(split.state.to_json())
    split.series("R", values[3:], start_s=900, step_s=300)
    assert [e.event_id for e in split.events] == [e.event_id for e in straight.events]


def test_registry_reload_clears_alarms_of_removed_rules() -> None:
    old = make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)))
    f = Feeder(old)
    f.series("L", [3.0])
    new = make_registry(sensor("L", "water_level", {"levels": LEVELS, "id": "renamed"},
                               rng=(0, 7)))
    f.engine = AlarmEngine(new)
    f.registry = new
    events = f.series("L", [3.0], start_s=60)
    assert ("value-upper", "cleared") in [(e.rule, e.event.value) for e in events]
    assert ("renamed", "raised") in [(e.rule, e.event.value) for e in events]
    assert "rule removed" in by_rule(events, "value-upper")[0].message


def test_state_is_saved_on_transitions_and_checkpoints() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             policy={"checkpoint_interval_s": 300}))
    f.series("L", [1.0, 1.0, 1.0])
    # The first report makes a checkpoint due (not a must: no alarm changed).
    assert [(o.save, o.checkpoint) for o in f.outcomes] == [(False, True), (False, False),
                                                            (False, False)]
    f.series("L", [3.0], start_s=180)
    assert f.outcomes[-1].save  # transition
    f.series("L", [3.0] * 10, start_s=240)
    # Periodic saves come every 150-300 s (50-100 % of the interval, spread by facility).
    saves = [240 + 60 * i for i, o in enumerate(f.outcomes[-10:]) if o.save or o.checkpoint]
    assert 1 <= len(saves) <= 4
    assert all(b - a >= 150 for a, b in zip([180, *saves], saves, strict=False))


def test_a_deferred_checkpoint_stays_due_until_saved() -> None:
    f = Feeder(make_registry(sensor("L", "water_level", {"levels": LEVELS}, rng=(0, 7)),
                             policy={"checkpoint_interval_s": 300}))
    f.series("L", [1.0])
    assert f.outcomes[-1].checkpoint
    f.state.checkpoint_ts = 0  # the caller had no budget: it did not save
    f.series("L", [1.0], start_s=10)
    assert f.outcomes[-1].checkpoint  # still due on the next report
    f.state.mark_saved()
    f.series("L", [1.0], start_s=20)
    assert not f.outcomes[-1].checkpoint
