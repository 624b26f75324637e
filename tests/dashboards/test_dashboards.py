"""Generated dashboards: structure, references, and that the committed JSON is current."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from schemas.registry import Registry
from services.dashboards.generate import dashboards, queries, render, thresholds

ROOT = Path(__file__).resolve().parents[2]


def test_committed_dashboards_are_current(registry: Registry) -> None:
    generated = dashboards(registry)
    committed = {p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert committed == set(generated)
    for name, board in generated.items():
        text = (ROOT / "grafana" / "dashboards" / name).read_text(encoding="utf-8")
        assert text == render(board), f"run `lifeline grafana generate` ({name})"


@pytest.mark.parametrize("name", ["overview.json", "pipeline.json", "drainage.json",
                                  "bridge.json", "sewage.json", "alarm.json"])
def test_dashboard_structure(registry: Registry, name: str) -> None:
    board = dashboards(registry)[name]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    provisioned = yaml.safe_load((ROOT / "grafana/provisioning/datasources/lifeline.yaml")
                                 .read_text())["datasources"][0]["uid"]
    defined = {v["name"] for v in board["templating"]["list"]}
    for where, q in queries(board):
        used = set(re.findall(r"\$(?!timeFilter|__interval)(\w+)", q))
        assert used <= defined, f"{where} uses undefined variables {used - defined}"
    for p in board["panels"]:
        assert p["datasource"]["uid"] == provisioned
        assert all(t["datasource"]["uid"] == provisioned for t in p["targets"])
        assert re.search(r"[\u4e00-\u9fff]", p["title"]) and re.search(r"[A-Za-z]", p["title"])
    json.dumps(board)  # serialisable


def test_kind_dashboards_cover_their_metrics_with_registry_thresholds(registry: Registry
                                                                      ) -> None:
    boards = dashboards(registry)
    drainage = boards["drainage.json"]
    level = next(p for p in drainage["panels"] if "Water level" in p["title"])
    steps = level["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [
        ("green", None), ("blue", 1.8), ("yellow", 2.25), ("orange", 2.7), ("red", 2.95)]
    o2 = thresholds(registry, __import__("schemas").Metric.O2)["steps"]
    assert [(s["color"], s["value"]) for s in o2] == [("red", None), ("yellow", 18.0),
                                                      ("green", 19.5)]
    kinds = {"drainage.json": "drainage", "bridge.json": "bridge", "sewage.json": "sewage"}
    for name, kind in kinds.items():
        metrics = {s.metric.value for f in registry.facilities if f.kind.value == kind
                   for s in f.sensors}
        titles = " ".join(p["title"] for p in boards[name]["panels"])
        for m in metrics:
            assert m.replace("_", " ").capitalize() in titles, (name, m)


def test_active_alarms_table_columns_colours_and_history_link(registry: Registry) -> None:
    boards = dashboards(registry)
    table = next(p for p in boards["overview.json"]["panels"]
                 if p["title"] == "活动告警 Active alarms")
    [target] = table["targets"]
    q = target["query"]
    assert q.startswith('SELECT "facility_name_zh", "facility_name", "district", "level", '
                        '"since_ms", "acked_by", "acked_at", "silenced", "suppressed", "held", '
                        '"stale_since", "message", "facility", "sensor", "severity", '
                        '"alarm_id", "kind", "since_ms" - 3600000 AS "history_from" FROM (')
    # facility and district alarms (a district's rainstorm, decision 0023)
    assert q.endswith(""") WHERE "severity" > 0""") and \
        "\"category\" =~ /^(facility|district)$/" in q
    assert 'GROUP BY "facility", "sensor", "rule", "kind", "category", "district"' in q
    assert target["resultFormat"] == "table"
    props = {o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
             for o in table["fieldConfig"]["overrides"]}
    shown = [n for n, pr in props.items() if not pr.get("custom.hidden")]
    assert shown == ["facility_name_zh", "facility_name", "district", "level", "since_ms",
                     "acked_by", "acked_at", "silenced", "suppressed", "held", "stale_since",
                     "message", "facility", "sensor"]
    assert {n for n, pr in props.items() if pr.get("custom.hidden")} == {
        "Time", "severity", "alarm_id", "kind", "history_from"}
    assert props["acked_by"]["displayName"] == "确认人 Acknowledged by"
    assert props["since_ms"]["unit"] == "dateTimeAsLocal"
    level = props["level"]
    assert level["custom.cellOptions"] == {"type": "color-background", "mode": "basic"}
    assert {k: v["color"] for k, v in level["mappings"][0]["options"].items()} == {
        "blue": "blue", "yellow": "yellow", "orange": "orange", "red": "red"}
    assert props["suppressed"]["mappings"][0]["options"]["true"]["text"] == "是 yes"
    assert table["transformations"] == [{"id": "sortBy", "options": {
        "fields": {}, "sort": [{"field": "severity", "desc": True}]}}]
    # The row link: the alarm history dashboard, for this alarm, from an hour before it.
    [link] = props["facility_name_zh"]["links"]
    assert link == props["facility_name"]["links"][0]
    assert link["url"] == ("/d/lifeline-alarm/alarm-history?var-alarm_id=${__data.fields."
                           "alarm_id}&var-facility=${__data.fields.facility}&var-sensor="
                           "${__data.fields.sensor}&from=${__data.fields.history_from}&to=now")
    history = boards["alarm.json"]
    assert history["uid"] == "lifeline-alarm"
    variables = {v["name"]: v["type"] for v in history["templating"]["list"]}
    assert variables == {"alarm_id": "textbox", "facility": "query", "sensor": "textbox"}
    for field in re.findall(r"var-(\w+)=", link["url"]):
        assert field in variables
    # Textboxes hold no query: only the facility variable is run against InfluxDB.
    assert [w for w, _ in queries(history) if "variable" in w] == [
        "lifeline-alarm/variable facility"]
    history_queries = [q for _, q in queries(history)]
    assert sum("\"alarm_id\" = '$alarm_id'" in q for q in history_queries) == 2
    health = next(p for p in boards["overview.json"]["panels"]
                  if p["title"] == "传感器与网关健康 Sensor and gateway health")
    assert "\"category\" != 'facility'" in health["targets"][0]["query"]
