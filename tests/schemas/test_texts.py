"""Bilingual alarm and page texts (issue 20): Chinese first, English second, the facility's
names and district, the level in words, and no internal rule key in anything a person reads."""

from __future__ import annotations

import html
import re
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from schemas import texts
from schemas.alarm import AlarmEvent
from schemas.kinds import AlarmLevel, FacilityKind, Metric
from schemas.registry import Registry, Signal
from services.notifier.links import AckLink
from services.notifier.messages import Item, render
from services.notifier.web import alarm_page
from tests.support.engine_helpers import Feeder, lv, sensor

CJK = re.compile(r"[\u4e00-\u9fff]")
ZONE = ZoneInfo("Asia/Shanghai")
FID = "DP-BH-001"
NAMES = {"name": "Binhai Park pump station 1", "name_zh": "滨海园区排涝泵站1号",
         "district": "Binhai Park", "district_zh": "滨海园区"}
# Every internal key the engine uses: none may reach a person.
KEYS = ["value-upper", "value-lower", "rate-600s-upper", "sum-3600s-upper", "twa-900s-upper",
        "sensor-out-of-range", "sensor-stuck", "sensor-offline", "gateway-offline",
        "gateway-seq-gap", "facility-dark", "high-pump-off"]


def has_both(text: texts.Bi) -> bool:
    return bool(CJK.search(text.zh)) and bool(re.search(r"[a-z]{3}", text.en)) \
        and not CJK.search(text.en)


# ------------------------------------------------------------------ templates

def test_levels_in_words() -> None:
    assert str(texts.level_words(AlarmLevel.RED)) == "红色预警（I级） red (level I)"
    assert str(texts.level_words("blue")) == "蓝色预警（IV级） blue (level IV)"
    assert texts.level_words(AlarmLevel.ORANGE).zh == "橙色预警（II级）"
    assert texts.level_words(AlarmLevel.YELLOW).en == "yellow (level III)"
    assert str(texts.level_words(None)) == "已解除 cleared"


@pytest.mark.parametrize("metric", list(Metric))
def test_every_metric_has_chinese_and_english_words(metric: Metric) -> None:
    w = texts.metric_words(metric)
    assert CJK.search(w.zh) or metric is Metric.PH
    assert w.en and "_" not in w.en


@pytest.mark.parametrize("kind", list(FacilityKind))
def test_every_kind_in_words(kind: FacilityKind) -> None:
    assert has_both(texts.kind_words(kind))


@pytest.mark.parametrize("rule", ["sensor-out-of-range", "sensor-stuck", "sensor-offline",
                                  "gateway-offline", "gateway-seq-gap", "facility-dark"])
def test_every_health_rule_in_words(rule: str) -> None:
    w = texts.rule_words(rule)
    assert has_both(w) and rule not in str(w)


@pytest.mark.parametrize("signal", [s.value for s in Signal])
@pytest.mark.parametrize("direction", ["upper", "lower"])
def test_every_level_rule_family_in_words(signal: str, direction: str) -> None:
    # Every signal of the registry has words (a new signal without them fails here).
    assert signal in texts.SIGNAL_WORDS
    key = {"value": f"value-{direction}", "step": f"step-k3-{direction}",
           "night_minimum": f"night_minimum-{direction}"}.get(signal,
                                                              f"{signal}-3600s-{direction}")
    w = texts.rule_words(key, Metric.WATER_LEVEL)
    assert has_both(w) and key not in str(w) and "水位" in w.zh and "water level" in w.en
    if key.endswith(f"-3600s-{direction}"):
        assert "1小时" in w.zh and "over 1 h" in w.en
    assert ("超上限" if direction == "upper" else "低于下限") in w.zh


def test_rules_without_a_parsable_key_use_their_description_or_what_they_watch() -> None:
    assert texts.rule_words("high-pump-off", None, "泵停且水位高 pump off, level high") == \
        texts.Bi("泵停且水位高 pump off, level high", "泵停且水位高 pump off, level high")
    assert str(texts.rule_words("high-pump-off")) == "组合条件告警 combined-condition alarm"
    assert str(texts.rule_words("o2-enriched", "o2")) == "氧气阈值告警 oxygen (O2) threshold alarm"


def test_durations_the_way_people_say_them() -> None:
    assert [str(texts.duration_words(s)) for s in (45, 600, 3600, 5400, 10800, 8 * 86400)] == [
        "45秒 45 s", "10分钟 10 min", "1小时 1 h", "90分钟 90 min", "3小时 3 h", "8天 8 d"]


def test_constant_texts_are_bilingual() -> None:
    for t in (texts.GATEWAY_STALE, texts.GATEWAY_BACK, texts.GATEWAY_FRESH, texts.DARK_BACK,
              texts.UNSILENCED, texts.RULE_REMOVED, texts.FAIL_DANGEROUS):
        assert has_both(t), t


def test_facility_words_and_fallback() -> None:
    assert texts.facility_words(facility_id=FID, **NAMES) == \
        "滨海园区排涝泵站1号（Binhai Park pump station 1，滨海园区 Binhai Park）"
    assert texts.facility_words(facility_id=FID, name="Pump 1", district="Longwan") == \
        "Pump 1（Longwan）"
    assert texts.facility_words(facility_id=FID) == FID


def test_the_message_of_a_level_rule() -> None:
    place = texts.facility_words(facility_id="DR-BH-001", name="Binhai Park manhole 1",
                                 name_zh="滨海园区排水检查井1号", district="Binhai Park",
                                 district_zh="滨海园区")
    body = texts.rule_message(Metric.WATER_LEVEL, "value", None, "upper", 2.96, "m",
                              AlarmLevel.RED, 2.95)
    assert texts.compose(place, body, "raised", AlarmLevel.RED) == (
        "【红色预警（I级）发布】滨海园区排水检查井1号（Binhai Park manhole 1，滨海园区 Binhai Park）"
        "水位 2.96 m 高于红色阈值 2.95 m — red (level I) raised: water level 2.96 m at or "
        "above the red threshold 2.95 m")
    low = texts.rule_message(Metric.O2, "value", None, "lower", 18.0, "%vol", "red", 18.0)
    assert low.zh == "氧气 18 %vol 低于红色阈值 18 %vol"
    assert texts.compose(place, texts.rule_message(Metric.WATER_LEVEL, "value", None, "upper",
                                                   1.0, "m", None, 1.7), "cleared", None) \
        .startswith("【告警解除】滨海园区排水检查井1号")


# ------------------------------------------------------------------ the engine

def registry(**names: Any) -> Registry:
    fac = {"id": FID, "kind": "drainage", "criticality": "critical", "lat": 27.9, "lon": 120.9,
           **names,
           "sensors": [
               sensor(f"{FID}-L1", "water_level",
                      {"levels": [lv("blue", 1.0, 0.9), lv("red", 3.0, 2.9)]},
                      {"signal": "rate", "window_s": 600, "levels": [lv("yellow", 0.2, 0.1)]},
                      rng=(0, 7), stuck_after_s=600),
               sensor(f"{FID}-R1", "rainfall",
                      {"signal": "sum", "window_s": 3600, "levels": [lv("blue", 20, 15)]},
                      rng=(0, 50)),
               sensor(f"{FID}-S1", "pump_state", rng=(0, 1)),
           ],
           "composites": [{"id": "high-pump-off", "level": "orange", "source": "test",
                           "all_of": [{"sensor": f"{FID}-L1", "op": ">=", "value": 2.0},
                                      {"sensor": f"{FID}-S1", "op": "<=", "value": 0.5}]}]}
    return Registry.model_validate({"name": "t", "facilities": [fac]})


def scenario(reg: Registry) -> list[AlarmEvent]:
    """Every family of alarm the engine raises: level, rate, window sum, composite, out of
    range (fail-dangerous), lost reports, gateway offline, dark, stuck, offline, clears."""
    f = Feeder(reg, FID)
    level, rain, pump = f"{FID}-L1", f"{FID}-R1", f"{FID}-S1"
    t = 0.0
    for v in (0.5, 1.5, 2.5, 3.5, 3.6, 8.0, 3.6):
        f.report(t, (level, v), (rain, 10.0), (pump, 0.0))
        t += 60
    f.report(t, (level, 3.6), (rain, 10.0), (pump, 0.0), seq=f.seq + 5)
    f.tick(t + 3600)
    t += 3700
    for _ in range(16):
        f.report(t, (level, 3.6), (pump, 0.0), received_s=t)
        t += 60
    for _ in range(12):
        f.report(t, (level, 0.2), (rain, 0.0), (pump, 1.0))
        t += 60
    return f.events


def test_every_engine_message_names_the_facility_in_chinese_and_english() -> None:
    events = scenario(registry(**NAMES))
    rules = {e.rule for e in events}
    assert rules == {"value-upper", "rate-600s-upper", "sum-3600s-upper", "high-pump-off",
                     "sensor-out-of-range", "gateway-seq-gap", "gateway-offline",
                     "facility-dark", "sensor-stuck", "sensor-offline"}
    assert {e.event.value for e in events} >= {"raised", "escalated", "updated", "cleared"}
    for e in events:
        m = e.message
        assert m.startswith("【") and "滨海园区排涝泵站1号" in m, m
        assert "Binhai Park pump station 1" in m and "滨海园区 Binhai Park" in m, m
        head = texts.level_words(e.level)
        if e.level is not None:
            assert m.startswith(f"【{head.zh}") and f" — {head.en} " in m, m
        zh, en = m.split(" — ", 1)
        assert CJK.search(zh) and re.search(r"[a-z]{4}", en), m
        for key in KEYS:
            assert key not in m, (key, m)
        assert (e.facility_name_zh, e.facility_name, e.district, e.district_zh) == (
            NAMES["name_zh"], NAMES["name"], NAMES["district"], NAMES["district_zh"])
    red = next(e for e in events if e.rule == "value-upper" and e.event.value == "escalated")
    assert "水位 3.5 m 高于红色阈值 3 m" in red.message
    assert "water level 3.5 m at or above the red threshold 3 m" in red.message
    dark = next(e for e in events if e.rule == "facility-dark")
    assert "滨海园区正在降雨" in dark.message and "Binhai Park under rain" in dark.message


def test_the_told_level_and_its_threshold_agree() -> None:
    """Debounced: a reading past red first tells blue; the words give blue's threshold."""
    reg = Registry.model_validate({"name": "t", "facilities": [{
        "id": "F-1", "kind": "drainage", "lat": 27.9, "lon": 120.9, **NAMES,
        "sensors": [sensor("F-1-L1", "water_level", {
            "levels": [lv("blue", 1.0), lv("red", 3.0)], "raise_after_count": 2})]}]})
    f = Feeder(reg, "F-1")
    f.series("F-1-L1", [1.5, 3.5, 3.5])
    first, second = f.events
    assert (first.level, first.threshold) == (AlarmLevel.BLUE, 1.0)
    assert "高于蓝色阈值 1 m" in first.message and "red" not in first.message
    assert (second.level, second.threshold) == (AlarmLevel.RED, 3.0)


def test_a_composite_uses_its_registry_description() -> None:
    reg = registry(**NAMES)
    raw = reg.model_dump(mode="json")
    raw["facilities"][0]["composites"][0]["description"] = "泵停且水位高 pump stopped, level high"
    events = scenario(Registry.model_validate(raw))
    comp = next(e for e in events if e.rule == "high-pump-off")
    assert "泵停且水位高 pump stopped, level high：水位 [DP-BH-001-L1] ≥ 2 m" in comp.message


def test_records_without_names_still_validate_and_read() -> None:
    events = scenario(registry(name=FID, district="d"))
    e = events[0]
    assert e.facility_name_zh is None and e.district_zh is None
    old = e.model_dump(mode="json")
    for k in ("facility_name", "facility_name_zh", "district", "district_zh"):
        del old[k]
    assert AlarmEvent.model_validate(old).facility_name is None  # records made before names
    assert e.message.startswith("【蓝色预警（IV级）发布】DP-BH-001（d）水位")


# ------------------------------------------------------------------ pages

def alarm_record(**extra: Any) -> dict[str, Any]:
    ev = next(e for e in scenario(registry(**NAMES))
              if e.rule == "value-upper" and e.event.value == "escalated")
    return {**ev.model_dump(mode="json"), **extra}


def test_a_page_carries_names_level_and_words_not_keys() -> None:
    a = alarm_record()
    msg = render([Item("n1", "page", a["alarm_id"], a, "https://ack.example/ack/t")], "ann", ZONE)
    assert msg.title == "Lifeline 告警 Alarm: 滨海园区排涝泵站1号 [DP-BH-001]"
    line = msg.text.splitlines()[1]
    assert line == ("- [红色预警（I级） red (level I)] 滨海园区排涝泵站1号（Binhai Park pump "
                    "station 1，滨海园区 Binhai Park） [DP-BH-001] 排水设施 — 水位超上限 water "
                    "level above its upper limit [DP-BH-001-L1] 3.5 m（阈值 threshold 3 m） "
                    "@ 07-01 08:03:00")
    for body in (msg.text, msg.markdown):
        assert "滨海园区排涝泵站1号" in body
        for key in KEYS:
            assert key not in body, key


@pytest.mark.parametrize("rule", KEYS)
def test_no_rule_key_in_any_page_or_ack_page(rule: str) -> None:
    metric = None if rule in ("gateway-offline", "gateway-seq-gap", "facility-dark",
                              "high-pump-off") else "water_level"
    a = alarm_record(rule=rule, metric=metric, message="")
    msg = render([Item("n1", "page", a["alarm_id"], a, None)], "ann", ZONE)
    link = AckLink(alarm_id=a["alarm_id"], facility_id=FID, person="ann", team="t",
                   notification_id="n1", shared=False)
    page = alarm_page(link, "tok", a, {}, [], ZONE)
    for body in (msg.text, msg.markdown, page):
        assert rule not in body and "滨海园区排涝泵站1号" in body
        for key in KEYS:
            assert f" {key}" not in body and f">{key}" not in body


def test_the_ack_page_shows_names_level_and_values() -> None:
    a = alarm_record()
    link = AckLink(alarm_id=a["alarm_id"], facility_id=FID, person="ann", team="t",
                   notification_id="n1", shared=False)
    page = alarm_page(link, "tok", a, {}, [], ZONE)
    assert '<span id="facility">滨海园区排涝泵站1号</span>' in page
    assert "红色预警（I级） red (level I)" in page
    assert "<th>设施 Facility</th><td>滨海园区排涝泵站1号（Binhai Park pump station 1，滨海园区 " \
           "Binhai Park） [DP-BH-001]</td>" in page
    assert "<th>数值 Value</th><td>3.5 m（阈值 threshold 3 m）</td>" in page
    assert "水位超上限 water level above its upper limit [DP-BH-001-L1]" in page


def test_the_ack_page_carries_the_standing_lines_a_page_carries() -> None:
    """Entry in progress with its crew leader, held by a fault, stale since: the same lines
    as the page (messages.standing), in the alarm's table, local time."""
    from services.notifier.messages import HELD, standing

    a = alarm_record(entry={"reason": "清淤 dredging", "crew_leader": "李强",
                            "crew_phone": "13800000031"},
                     held_by_fault=True, stale_since="2026-07-01T00:05:00+00:00")
    link = AckLink(alarm_id=a["alarm_id"], facility_id=FID, person="ann", team="t",
                   notification_id="n1", shared=False)
    page = alarm_page(link, "tok", a, {}, [], ZONE)
    lines = standing(a, ZONE)
    assert lines == ["井下作业进行中 confined-space entry in progress — crew leader 李强 "
                     "13800000031 (清淤 dredging)", HELD, "数据自 08:05 起中断 data stale since "
                     "08:05 local"]
    rows = re.findall(r'<tr class="warn"><th>注意 Attention</th><td>([^<]*)</td></tr>', page)
    assert rows == [html.escape(x) for x in lines]
    # Right after the level, before the facility (most urgent first, as on the page).
    assert page.index("红色预警（I级） red (level I)") < page.index(rows[0]) \
        < page.index("<th>设施 Facility</th>")
    msg = render([Item("n1", "page", a["alarm_id"], a, None)], "ann", ZONE)
    assert all(x in msg.text for x in lines)
    plain = alarm_page(link, "tok", alarm_record(), {}, [], ZONE)
    assert "注意 Attention" not in plain and 'class="warn"' not in plain


def test_the_ack_page_readings_are_local_time_with_bilingual_headers() -> None:
    a = alarm_record()
    link = AckLink(alarm_id=a["alarm_id"], facility_id=FID, person="ann", team="t",
                   notification_id="n1", shared=False)
    # As services.notifier.web.recent_readings returns them: ISO 8601 UTC, oldest first.
    readings = [(f"2026-07-01T00:{m:02d}:00+00:00", 3.0 + m / 100) for m in range(10)]
    page = alarm_page(link, "tok", a, {}, readings, ZONE)
    table = page.split('<table id="readings">', 1)[1].split("</table>", 1)[0]
    assert table.startswith("<tr><th>时间 Time (Asia/Shanghai)</th><th>数值 Value (m)</th></tr>")
    assert re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", table) == [
        (f"2026-07-01 08:{m:02d}:00", f"{3.0 + m / 100:g}") for m in range(2, 10)]
    assert "UTC" not in table and "time (" not in table
    # A time without an offset is UTC too.
    naive = alarm_page(link, "tok", a, {}, [("2026-07-01 00:00:00", 1.0)], ZONE)
    assert "<tr><td>2026-07-01 08:00:00</td><td>1</td></tr>" in naive


def test_pages_of_records_without_names_fall_back_to_ids() -> None:
    a = alarm_record(facility_name=None, facility_name_zh=None, district_zh=None,
                     district="unknown")
    msg = render([Item("n1", "page", a["alarm_id"], a, None)], "ann", ZONE)
    assert msg.title == "Lifeline 告警 Alarm: DP-BH-001"
    assert "] DP-BH-001 [DP-BH-001] 排水设施 — 水位超上限" in msg.text
    link = AckLink(alarm_id=a["alarm_id"], facility_id=FID, person="ann", team="t",
                   notification_id="n1", shared=False)
    assert '<span id="facility">DP-BH-001</span>' in alarm_page(link, "tok", a, {}, [], ZONE)


def test_silences_are_told_as_time_and_lost_reports_as_a_count() -> None:
    assert texts.value_words("gateway-offline", 3660, 180, "") == \
        "已 61分钟 无数据 silent for 61 min（超过 3分钟 即告警 limit 3 min）"
    assert texts.value_words("gateway-seq-gap", 4, 0, "") == "丢失 4 条报文 4 report(s) lost"
    assert texts.value_words("sensor-stuck", 3.6, 600, "m") == \
        "3.6 m（不变超过 10分钟 判为卡滞 unchanged beyond 10 min）"
    assert texts.value_words("value-upper", None, None, "m") == ""
