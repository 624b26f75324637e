"""The registry's rule language for step, count, deviation, night-minimum and long-window
rules: what validates, errors that name the field, and the committed JSON Schema."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.registry import Registry
from tests.support.engine_helpers import lv, make_registry, sensor
from tests.support.paths import ROOT

LEVELS = [lv("yellow", 3)]


def flow(*rules: dict[str, Any], **extra: Any) -> Registry:
    return make_registry(sensor("Q", "flow", *rules, rng=(0, 1000), **extra))


GOOD = [
    {"signal": "step", "levels": LEVELS},
    {"signal": "step", "step_k": 1, "direction": "lower", "levels": [lv("yellow", -3)]},
    {"signal": "count", "count_above": 150, "levels": LEVELS},
    {"signal": "count", "of": "mean", "window_s": 900, "count_above": 150, "levels": LEVELS},
    {"signal": "deviation", "levels": LEVELS},
    {"signal": "deviation", "of": "mean", "window_s": 3600, "deviation_as": "spreads",
     "levels": LEVELS},
    {"signal": "night_minimum", "levels": LEVELS},
    {"signal": "night_minimum", "deviation_as": "difference", "levels": LEVELS},
    {"signal": "rate", "window_s": 90 * 86400, "rate_per_s": 86400, "levels": LEVELS},
]


@pytest.mark.parametrize("rule", GOOD)
def test_the_new_rules_validate_and_a_dumped_registry_loads_again(rule: dict[str, Any]) -> None:
    reg = flow(rule)
    assert Registry.model_validate(reg.model_dump(mode="json")) == reg
    assert Registry.model_validate_json(reg.model_dump_json()) == reg


@pytest.mark.parametrize(("rule", "message"), [
    ({"step_k": 2, "levels": LEVELS}, "step_k applies to signal step only, not value"),
    ({"signal": "step", "step_k": 11, "levels": LEVELS}, "step_k"),
    ({"signal": "step", "window_s": 600, "levels": LEVELS}, "a step rule has no window_s"),
    ({"signal": "count", "levels": LEVELS}, "count needs count_above"),
    ({"signal": "count", "count_above": 1, "direction": "lower", "levels": [lv("yellow", 1)]},
     "direction of a count is upper"),
    ({"signal": "count", "of": "mean", "window_s": 700, "count_above": 1, "levels": LEVELS},
     "window_s of a count must divide the day"),
    ({"signal": "count", "of": "mean", "count_above": 1, "levels": LEVELS},
     "of mean needs window_s"),
    ({"signal": "count", "window_s": 900, "count_above": 1, "levels": LEVELS},
     "window_s goes with of"),
    ({"signal": "count", "of": "rate", "window_s": 900, "count_above": 1, "levels": LEVELS},
     "of must be one of"),
    ({"signal": "deviation", "of": "mean", "window_s": 8 * 86400, "levels": LEVELS},
     "at most 7 days"),
    ({"signal": "mean", "window_s": 600, "of": "max", "levels": LEVELS},
     "of applies to signal count or deviation only"),
    ({"signal": "max", "window_s": 600, "count_above": 3, "levels": LEVELS},
     "count_above applies to signal count only"),
    ({"signal": "step", "deviation_as": "spreads", "levels": LEVELS},
     "deviation_as applies to signal deviation or night_minimum only"),
    ({"signal": "night_minimum", "window_s": 3600, "levels": LEVELS},
     "a night_minimum rule has no window_s"),
    ({"signal": "mean", "window_s": 91 * 86400, "levels": LEVELS}, "window_s"),
])
def test_a_wrong_rule_is_refused_naming_the_field(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as exc:
        flow(rule)
    assert "facilities.0.sensors.0.rules.0" in str(exc.value)


@pytest.mark.parametrize(("baseline", "rules", "message"), [
    ({"min_days": 3}, [{"levels": LEVELS}], "baseline is set but no rule reads it"),
    ({"night_from": "05:00", "night_to": "02:00"}, [{"signal": "night_minimum",
                                                      "levels": LEVELS}], "night_from"),
    ({"min_days": 40, "memory_days": 28}, [{"signal": "deviation", "levels": LEVELS}],
     "min_days 40 exceeds memory_days"),
])
def test_a_wrong_baseline_is_refused(baseline: dict[str, Any], rules: list[dict[str, Any]],
                                     message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        flow(*rules, baseline=baseline)


def test_composites_read_long_windows_but_not_the_sensor_only_signals() -> None:
    two = [{"sensor": "Q", "signal": "mean", "window_s": 30 * 86400, "op": ">=", "value": 1},
           {"sensor": "Q", "op": ">=", "value": 1}]
    comp = {"id": "c", "level": "red", "source": "test", "all_of": two}
    assert make_registry(sensor("Q", "flow"), composites=[comp]).facilities[0].composites
    bad = {**comp, "all_of": [{"sensor": "Q", "signal": "step", "op": ">=", "value": 1}, two[1]]}
    with pytest.raises(ValidationError, match="signal step is a sensor rule's only"):
        make_registry(sensor("Q", "flow"), composites=[bad])


def test_the_committed_json_schema_documents_the_new_signals() -> None:
    schema = json.loads((ROOT / "schemas" / "json" / "registry.schema.json").read_text())
    defs = schema["$defs"]
    assert {"step", "count", "deviation", "night_minimum"} <= set(defs["Signal"]["enum"])
    rule = defs["Rule"]["properties"]
    assert {"step_k", "of", "count_above", "deviation_as"} <= set(rule)
    assert rule["window_s"]["anyOf"][0]["maximum"] == 90 * 86400
    assert "baseline" in defs["Sensor"]["properties"]
    assert set(defs["Baseline"]["properties"]) == {"memory_days", "min_days", "night_from",
                                                   "night_to", "spread_floor"}
