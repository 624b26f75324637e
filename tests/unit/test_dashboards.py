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
                                  "bridge.json", "sewage.json"])
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
