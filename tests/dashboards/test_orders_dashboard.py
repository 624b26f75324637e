"""The work-orders dashboard (orders.json) and its PostgreSQL data source: every SQL target
names only tables and columns of the orders store's schema (services/orders/store.py
SCHEMA), uses the provisioned data source, and counts open and overdue as the lifecycle
defines them; the provisioning file holds no secret. The last test runs every query in a
real PostgreSQL (the session's stack: integration)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from schemas.kinds import AlarmLevel
from schemas.registry import Registry
from schemas.workorder import (
    DeadlinePolicy,
    OrderAction,
    OrderEvent,
    OrderState,
    WorkOrder,
    event_id_for,
    order_id_for,
)
from services.dashboards.generate import (
    PG_DATASOURCE,
    dashboards,
    queries,
    render,
    sql_queries,
)
from services.dashboards.provision import (
    PG_DATASOURCE_NAME,
    PG_JSON_DATA,
    PostgresSource,
    ProvisionError,
    postgres_datasource_model,
    provision,
)
from services.orders.store import SCHEMA, Store
from services.stack.manager import Stack
from tests.dashboards.test_grafana_provision import (  # noqa: F401 — the fixture
    INFLUX_TOKEN,
    TOKEN,
    FakeGrafana,
    grafana,
)

ROOT = Path(__file__).resolve().parents[2]
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "lifeline.yaml"
PG_PASSWORD = "pg-grafana-read-0123456789abcdef"

# What the SQL may say besides tables, columns and aliases: keywords, types, functions.
SQL_WORDS = frozenset((
    "select", "from", "where", "and", "or", "not", "in", "as", "group", "by", "order", "desc",
    "asc", "join", "left", "on", "with", "values", "case", "when", "then", "else", "end",
    "filter", "within", "is", "null", "interval", "epoch", "numeric", "float8", "count",
    "max", "min", "round", "extract", "percentile_cont", "date_trunc", "now"))
MACRO = re.compile(r"\$__timeFilter\((\w+)\)")


def tables_of_schema() -> dict[str, set[str]]:
    """Table -> columns, read from the store's CREATE TABLE and ALTER TABLE statements."""
    tables: dict[str, set[str]] = {}
    for statement in SCHEMA:
        s = " ".join(statement.split())
        created = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)$", s)
        if created:
            body = re.sub(r"\([^()]*\)", "", created.group(2))  # e.g. numeric(5, 2)
            tables[created.group(1)] = {c.strip().split()[0] for c in body.split(",")}
            continue
        added = re.match(r"ALTER TABLE (\w+) ADD COLUMN IF NOT EXISTS (\w+) ", s)
        if added:
            tables[added.group(1)].add(added.group(2))
    return tables


def check_sql(sql: str, tables: dict[str, set[str]]) -> list[str]:
    """What ``sql`` names that the schema lacks (empty: every table and column exists).
    A small reader for the queries this generator writes, not a SQL parser: string
    literals are dropped, then every word must be a keyword or function, a table, a CTE,
    an alias, or a column of a table the query reads (``alias.column`` of that table)."""
    text = re.sub(r"'(?:[^']|'')*'", "''", sql)
    text = MACRO.sub(r"(\1)", text)
    problems = []
    known = dict(tables)
    for name, cols in re.findall(r"WITH (\w+) \(([^)]*)\) AS \(VALUES", text):
        known[name] = {c.strip() for c in cols.split(",")}
    text = re.sub(r"AS \(VALUES[^;]*?\)\)\n", "AS (VALUES (0)) ", text)  # the rows
    text = re.sub(r"\b\d+(\.\d+)?\b", "0", text)
    aliases: dict[str, str] = {}
    read: set[str] = set()
    unknown: set[str] = set()
    for table, alias in re.findall(  # not extract(epoch FROM …)
            r"(?<!epoch )\b(?:FROM|JOIN) (\w+)(?: (?!WHERE|ON|GROUP|ORDER|LEFT|JOIN)(\w+))?",
            text):
        if table not in known:
            problems.append(f"table {table}")
            unknown.add(table)
            continue
        read.add(table)
        if alias:
            aliases[alias] = table
    outputs = set(re.findall(r"\bAS (\w+)", text))
    ctes = set(known) - set(tables)
    columns = set().union(*(known[t] for t in read)) if read else set()
    for word in re.findall(r"[A-Za-z_]\w*(?:\.\w+)?", text):
        if "." in word:
            alias, column = word.split(".")
            if alias not in aliases:
                problems.append(f"alias {alias}")
            elif column not in known[aliases[alias]]:
                problems.append(f"column {aliases[alias]}.{column}")
            continue
        if (word.lower() in SQL_WORDS or word in read or word in ctes or word in aliases
                or word in outputs or word in columns or word in unknown):
            continue
        problems.append(f"column {word}")
    return problems


def test_check_sql_finds_what_the_schema_lacks() -> None:
    tables = tables_of_schema()
    assert {"order_id", "state", "deadline", "closed_at", "escalation", "sensor_id",
            "owner_unit"} <= tables["work_order"]
    assert "seq" in tables["work_order_event"]  # from the ALTER TABLE
    assert check_sql("SELECT count(*) AS n FROM work_order WHERE state = 'x'", tables) == []
    assert check_sql("SELECT o.closed_by FROM work_order o", tables) == [
        "column work_order.closed_by"]
    assert check_sql("SELECT unit FROM work_order", tables) == ["column unit"]
    assert check_sql("SELECT x FROM work_orders", tables) == ["table work_orders", "column x"]


@pytest.fixture
def board(registry: Registry) -> dict[str, Any]:
    return dashboards(registry)["orders.json"]


def test_the_orders_dashboard_is_generated_and_committed(registry: Registry,
                                                         board: dict[str, Any]) -> None:
    assert board["uid"] == "lifeline-orders" and board["title"] == "工单 Work orders"
    committed = (ROOT / "grafana" / "dashboards" / "orders.json").read_text(encoding="utf-8")
    assert committed == render(board)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert re.search(r"[\u4e00-\u9fff]", p["title"]) and re.search(r"[A-Za-z]", p["title"])
    kinds = [p["type"] for p in board["panels"]]
    assert kinds.count("stat") == 4 and "geomap" in kinds and kinds.count("table") == 2
    assert list(queries(board)) == []  # no InfluxQL: nothing for the InfluxDB query test
    assert board["templating"]["list"] == [] and board["annotations"]["list"] == []


def test_every_target_reads_the_provisioned_postgresql(board: dict[str, Any]) -> None:
    [pg] = [d for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]
            if d["type"] == "grafana-postgresql-datasource"]
    assert {"type": pg["type"], "uid": pg["uid"]} == PG_DATASOURCE
    for p in board["panels"]:
        assert p["datasource"] == PG_DATASOURCE, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == PG_DATASOURCE and t["rawQuery"] is True
            assert t["format"] in ("table", "time_series") and "query" not in t


def test_every_sql_target_names_only_the_stores_tables_and_columns(
        board: dict[str, Any]) -> None:
    tables = tables_of_schema()
    found = list(sql_queries(board))
    assert len(found) == 11
    for where, sql in found:
        assert check_sql(sql, tables) == [], where
        # The only Grafana macro is the time filter, of a timestamp column.
        assert set(re.findall(r"\$\w+", sql)) <= {"$__timeFilter"}, where
        for column in MACRO.findall(sql):
            assert column in ("opened_at", "closed_at"), where


def test_time_series_targets_have_a_sorted_time_column(board: dict[str, Any]) -> None:
    series = [t for p in board["panels"] for t in p["targets"] if t["format"] == "time_series"]
    assert len(series) == 3
    for t in series:
        sql = t["rawSql"]
        assert re.match(r"SELECT date_trunc\('day', (opened|closed)_at, 'Asia/Shanghai'\) "
                        r"AS time, .* AS metric, ", sql)
        assert sql.endswith("GROUP BY 1, 2 ORDER BY 1")


def _order(state: OrderState) -> WorkOrder:
    at = datetime(2026, 12, 1, 8, tzinfo=UTC)
    return WorkOrder(order_id="WO-0", state=state, alarm_id="a", facility_id="F",
                     level=AlarmLevel.RED, owner_unit="u", opened_at=at,
                     deadline=at + timedelta(hours=2), updated_at=at, last_event_id="e",
                     events=1)


def _states(sql: str) -> set[str]:
    [listed] = re.findall(r"state NOT IN \(([^)]*)\)", sql)
    return {s.strip().strip("'") for s in listed.split(",")}


def test_open_and_overdue_are_the_lifecycles(board: dict[str, Any]) -> None:
    stats = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]
             if p["type"] == "stat"}
    late = datetime(2026, 12, 1, 11, tzinfo=UTC)  # an hour past every deadline above
    not_overdue = {s.value for s in OrderState if not DeadlinePolicy.overdue(_order(s), late)}
    overdue_sql = stats["超期工单 Overdue orders"]
    assert "deadline < now()" in overdue_sql  # strictly after the deadline
    assert _states(overdue_sql) == not_overdue == {"closed", "false_alarm", "verified"}
    assert _states(stats["未结工单 Open orders"]) == {"closed", "false_alarm"}
    assert _states(stats["督办中 Escalated"]) == not_overdue
    assert "escalation > 0" in stats["督办中 Escalated"]
    assert "$__timeFilter(closed_at)" in stats["误报 False alarms (time range)"]
    table = next(p for p in board["panels"] if p["type"] == "table"
                 and p["title"].startswith("超期工单"))
    sql = table["targets"][0]["rawSql"]
    assert sql.endswith("ORDER BY o.deadline, o.order_id")  # most overdue first
    shown = [o["matcher"]["options"] for o in table["fieldConfig"]["overrides"]]
    for column in ("order_id", "facility_id", "owner_unit", "level", "state", "deadline",
                   "hours_overdue", "escalation"):
        assert column in shown and re.search(rf"\b{column}\b", sql)


def test_the_map_has_every_registry_facility_quoted(registry: Registry) -> None:
    data = registry.model_dump(mode="json")
    data["facilities"][0]["name"] = "O'Brien's manhole"
    quoted = Registry.model_validate(data)
    board = dashboards(quoted)["orders.json"]
    [sql] = [q for w, q in sql_queries(board) if "Open orders map" in w]
    for f in quoted.facilities:
        assert f"({_lit(f.id)}, {_lit(f.name_zh or f.name)}, {_lit(f.name)}, " \
               f"{f.lat!r}, {f.lon!r})" in sql
    assert "'O''Brien''s manhole'" in sql
    assert "FROM work_order o JOIN facility f ON f.facility_id = o.facility_id" in sql


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def test_the_sensor_health_table_links_to_the_false_alarms(registry: Registry) -> None:
    boards = dashboards(registry)
    health = next(p for p in boards["overview.json"]["panels"]
                  if p["title"] == "传感器与网关健康 Sensor and gateway health")
    [link] = health["links"]
    assert link["url"].startswith(f"/d/{boards['orders.json']['uid']}/")
    titles = [p["title"] for p in boards["orders.json"]["panels"]]
    assert link["title"] in titles
    [sql] = [q for w, q in sql_queries(boards["orders.json"]) if "False alarms per sensor" in w]
    assert "o.state = 'false_alarm' AND o.closed_at > now() - interval '30 days'" in sql
    assert "GROUP BY o.sensor_id" in sql


def test_the_datasource_file_holds_no_secret() -> None:
    text = DATASOURCES.read_text()
    [pg] = [d for d in yaml.safe_load(text)["datasources"]
            if d["uid"] == PG_DATASOURCE["uid"]]
    env_ref = re.compile(r"^\$(\{[A-Z_][A-Z0-9_]*\}|__env\{[A-Z_][A-Z0-9_]*\})$")
    assert env_ref.match(pg["user"]) and env_ref.match(pg["secureJsonData"]["password"])
    assert set(pg["secureJsonData"]) == {"password"} and "password" not in pg
    assert pg["jsonData"] == {"database": "lifeline", "sslmode": "disable", **PG_JSON_DATA}
    assert pg["isDefault"] is False
    # Whatever secureJsonData holds, in any data source, is a reference to the environment.
    for ds in yaml.safe_load(text)["datasources"]:
        for value in ds.get("secureJsonData", {}).values():
            rest = re.sub(r"\$(\{\w+\}|__env\{\w+\})", "", value).strip()
            assert rest in ("", "Token"), ds["name"]
    assert PG_PASSWORD not in text and "CHANGE-ME" not in text


def test_provision_adds_the_postgresql_datasource(grafana: tuple[str, FakeGrafana],  # noqa: F811
                                                  registry: Registry) -> None:
    url, fake = grafana
    pg = PostgresSource("postgres:5432", "grafana_reader", PG_PASSWORD)
    assert PG_PASSWORD not in repr(pg)
    first = provision(url, TOKEN, registry, influx_url="http://influxdb:8086",
                      influx_token=INFLUX_TOKEN, postgres=pg)
    assert fake.errors == []
    assert f"datasource {PG_DATASOURCE_NAME}" in first.created
    stored = fake.datasources[PG_DATASOURCE_NAME]
    model = postgres_datasource_model(pg)
    assert {k: stored[k] for k in ("uid", "type", "url", "user", "jsonData")} == {
        k: model[k] for k in ("uid", "type", "url", "user", "jsonData")}
    second = provision(url, TOKEN, registry, influx_url="http://influxdb:8086",
                       influx_token=INFLUX_TOKEN, postgres=pg)
    assert second.created == [] and second.updated == []
    moved = provision(url, TOKEN, registry, influx_url="http://influxdb:8086",
                      influx_token=INFLUX_TOKEN,
                      postgres=PostgresSource("pg.internal:5432", "grafana_reader", PG_PASSWORD))
    assert moved.updated == [f"datasource {PG_DATASOURCE_NAME}"]
    requests = len(fake.requests)
    with pytest.raises(ProvisionError, match=r"^LIFELINE_GRAFANA_POSTGRES_PASSWORD is refused"):
        provision(url, TOKEN, registry, influx_url="http://influxdb:8086",
                  influx_token=INFLUX_TOKEN,
                  postgres=PostgresSource("postgres:5432", "grafana_reader", "CHANGE-ME-pg"))
    assert len(fake.requests) == requests  # refused before anything was sent


# --------------------------------------------------------------------- integration
def _events(now: datetime, facility: str, sensor: str, unit: str) -> Iterator[OrderEvent]:
    """Three red orders of ``facility`` for ``unit``: opened 5 h ago with 1 h to its deadline
    (overdue), one a false alarm an hour after opening, one closed 5 h after opening."""
    def ev(oid: str, action: OrderAction, at: datetime, **fields: Any) -> OrderEvent:
        return OrderEvent(event_id=event_id_for(oid, action, at, "tester"), order_id=oid,
                          action=action, at=at, actor="tester", **fields)

    steps: tuple[tuple[OrderAction, dict[str, str]], ...] = (
        (OrderAction.DISPATCH, {"assignee": "zhang.wei"}), (OrderAction.ACCEPT, {}),
        (OrderAction.REPORT, {}), (OrderAction.VERIFY, {}), (OrderAction.CLOSE, {}))
    for n, (opened, hours) in enumerate(((5, 1), (6, 24), (8, 24))):
        aid = f"{unit}-{n}"
        oid, at = order_id_for(aid), now - timedelta(hours=opened)
        yield ev(oid, OrderAction.OPEN, at, alarm_id=aid, facility_id=facility,
                 sensor_id=sensor, level=AlarmLevel.RED, owner_unit=unit,
                 deadline=at + timedelta(hours=hours))
        if n == 1:
            yield ev(oid, OrderAction.FALSE_ALARM, at + timedelta(hours=1), reason="test")
        if n == 2:
            for i, (action, fields) in enumerate(steps, 1):
                yield ev(oid, action, at + timedelta(hours=i), **fields)


def test_every_orders_query_runs_in_postgresql(stack: Stack, registry: Registry) -> None:
    url = stack.env()["LIFELINE_POSTGRES_URL"]
    facility = registry.facilities[0]
    sensor = facility.sensors[0].id
    now = datetime.now(UTC).replace(microsecond=0)
    unit = f"TEST-DASH-{now.timestamp():.0f}"  # this run's orders only

    async def fill() -> None:
        store = Store(url)
        await store.connect()
        try:
            for i, e in enumerate(_events(now, facility.id, sensor, unit)):
                applied, _, why = await store.apply(e, f"{unit}/{i}")
                assert applied == "applied", why
        finally:
            await store.close()

    asyncio.run(fill())
    rows: dict[str, list[dict[str, Any]]] = {}  # panel title: rows of all its targets
    with psycopg.connect(url, row_factory=dict_row) as conn:
        for where, sql in sql_queries(dashboards(registry)["orders.json"]):
            # Grafana's macro as Grafana expands it: column BETWEEN 'from' AND 'to'.
            sql = MACRO.sub(r"\1 BETWEEN now() - interval '30 days' AND now()", sql)
            rows.setdefault(where.split("/")[1], []).extend(conn.execute(sql).fetchall())
    assert rows["超期工单 Overdue orders"][0]["overdue"] >= 1
    assert rows["误报 False alarms (time range)"][0]["false_alarms"] >= 1
    assert rows["未结工单 Open orders"][0]["open_orders"] >= 1
    mapped = [r for r in rows["未结工单地图 Open orders map"] if r["facility"] == facility.id]
    assert mapped and mapped[0]["severity"] == 4 and float(mapped[0]["lat"]) == facility.lat
    overdue = [r for r in rows["超期工单 Overdue orders (most overdue first)"]
               if r["owner_unit"] == unit]
    assert len(overdue) == 1 and float(overdue[0]["hours_overdue"]) >= 3.9
    assert overdue[0]["facility_name_zh"] == facility.name_zh
    assert [r["open_orders"] for r in rows["各单位未结工单 Open orders per unit"]
            if r["owner_unit"] == unit] == [1]
    [handling] = [r for title, found in rows.items() if title.startswith("处置时长")
                  for r in found if r["metric"] == unit]
    assert handling["median"] == pytest.approx(5.0) and handling["p90"] == pytest.approx(5.0)
    per_day = [r for title, found in rows.items() if title.startswith("每日开单与销号")
               for r in found if r["metric"] in ("开单 opened red", "销号 closed red")]
    assert {r["metric"] for r in per_day} == {"开单 opened red", "销号 closed red"}
    assert any(r["sensor_id"] == sensor and r["false_alarms"] >= 1
               for r in rows["误报（近30天）False alarms per sensor, last 30 days"])
