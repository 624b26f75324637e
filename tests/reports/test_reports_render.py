"""The daily and weekly reports (services/reports/): rendering synthetic reports to HTML and
PDF (the PDF drawn back to images with pdfium), and assembling a report from rows and
series shaped like PostgreSQL's and InfluxDB's answers. No stack."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pypdfium2 as pdfium  # type: ignore[import-untyped]
import pytest
from PIL import Image

from schemas.kinds import AlarmLevel, FacilityKind
from schemas.registry import Registry
from schemas.texts import Bi
from schemas.workorder import OrderState
from services.reports import render
from services.reports.collect import (
    assemble,
    completeness,
    dust_sites,
    in_alarm_seconds,
    influx_queries,
    order_rows,
)
from services.reports.data import (
    AlarmGroup,
    AlarmStats,
    Completeness,
    DustDay,
    DustSite,
    FacilityAlarms,
    FontNotFound,
    LevelCounts,
    OrderRow,
    ReportData,
    UnitStats,
    period_of,
)

pytestmark = pytest.mark.unit

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 12, 1)
HOSTILE = "<script>alert('x')</script>"
SITE_ZH = "空港新区在建工地1号"


def _t(hour: float, day: int = 0) -> datetime:
    return datetime(2026, 12, 1, tzinfo=TZ) + timedelta(days=day, hours=hour)


def _order(oid: str, *, name: str = "Airport New Area construction site 1",
           name_zh: str | None = SITE_ZH, level: AlarmLevel = AlarmLevel.ORANGE,
           state: OrderState = OrderState.CLOSED, unit: str = "温州湾建工集团 Wenzhou Bay "
           "Construction Group", opened: float = 1, closed: float | None = 3.5,
           overdue: bool = False, escalation: int = 0) -> OrderRow:
    return OrderRow(order_id=oid, facility_id="CS-KG-001", name=name, name_zh=name_zh,
                    level=level, state=state, owner_unit=unit, opened_at=_t(opened),
                    deadline=_t(opened + 4), closed_at=_t(closed) if closed is not None else None,
                    overdue=overdue, escalation=escalation, kind=FacilityKind.SITE)


def synthetic(kind: str = "daily", *, hostile: bool = False) -> ReportData:
    period = period_of("weekly" if kind == "weekly" else "daily", DAY, TZ)
    name = HOSTILE if hostile else "Binhai Park manhole 1"
    unit = f"{HOSTILE} unit" if hostile else "温州湾新区排水有限公司 Wenzhou Bay Drainage Co."
    orders = (
        _order("WO-0000000000000001"),
        _order("WO-0000000000000002", name=name, name_zh=None if hostile else "滨海园区排水检查井1号",
               level=AlarmLevel.RED, state=OrderState.IN_PROGRESS, unit=unit, closed=None,
               overdue=True, escalation=2),
        _order("WO-0000000000000003", level=AlarmLevel.YELLOW, state=OrderState.FALSE_ALARM,
               closed=6),
    )
    units = (UnitStats(owner_unit=unit, opened=1, overdue=1, open_at_end=1),
             UnitStats(owner_unit="温州湾建工集团 Wenzhou Bay Construction Group", opened=2,
                       closed=1, false_alarm=1, median_hours=2.5, max_hours=2.5))
    days = tuple(DustDay(day=d, mean=180.0 if i == 0 else 90.0, hours=24, exceeded=i == 0)
                 for i, d in enumerate(period.days))
    return ReportData(
        period=period, registry_name="温州湾新区 Wenzhou Bay New Area",
        generated_at=period.end + timedelta(minutes=5),
        alarms=AlarmStats(
            by_level=LevelCounts(red=1, orange=3, yellow=5, blue=2), episodes=9,
            by_kind=(AlarmGroup("site", Bi("在建工地", "construction site"),
                                LevelCounts(orange=3, yellow=5)),
                     AlarmGroup("drainage", Bi("排水设施", "drainage"),
                                LevelCounts(red=1, blue=2))),
            by_district=(AlarmGroup("Airport New Area", Bi("空港新区", "Airport New Area"),
                                    LevelCounts(red=1, orange=3, yellow=5, blue=2)),),
            faults=(AlarmGroup("gateway", Bi("通信故障", "gateway fault"), LevelCounts(yellow=2)),)),
        facilities=(FacilityAlarms(facility_id="CS-KG-001", name="Airport New Area construction "
                                   "site 1", name_zh=SITE_ZH, kind=FacilityKind.SITE,
                                   district="Airport New Area", district_zh="空港新区", alarms=8,
                                   worst=AlarmLevel.ORANGE, in_alarm_s=5400, faults=1),
                    FacilityAlarms(facility_id="DR-BH-001", name=name, name_zh=None,
                                   kind=FacilityKind.DRAINAGE, district=None, district_zh=None,
                                   alarms=3, worst=AlarmLevel.RED, in_alarm_s=600)),
        orders=orders, units=units,
        completeness_kinds=(Completeness(kind=FacilityKind.SITE, sensors=7, received=9000,
                                         expected=10080),),
        completeness_gateways=(Completeness(kind=FacilityKind.SITE, sensors=7, received=9000,
                                            expected=10080, facility_id="CS-KG-001",
                                            name="Airport New Area construction site 1",
                                            name_zh=SITE_ZH),),
        dust=(DustSite(facility_id="CS-KG-001", name="Airport New Area construction site 1",
                       name_zh=SITE_ZH, owner_unit="温州湾建工集团 Wenzhou Bay Construction Group",
                       limit=150.0, limit_source=Bi("GB 3095-2012 二级", "GB 3095-2012 grade II"),
                       limit_from_registry=False, days=days),),
        notes=(Bi("说明一。", "Note one."),))


def empty() -> ReportData:
    period = period_of("daily", DAY, TZ)
    return ReportData(period=period, registry_name="温州湾新区 Wenzhou Bay New Area",
                      generated_at=period.end + timedelta(minutes=5))


def _pdf_text(pdf: bytes) -> tuple[str, list[Image.Image]]:
    doc = pdfium.PdfDocument(pdf)
    try:
        texts, images = [], []
        for i in range(len(doc)):
            page = doc[i]
            texts.append(page.get_textpage().get_text_range())
            images.append(page.render(scale=1.5).to_pil().convert("L"))
        return "\n".join(texts), images
    finally:
        doc.close()


@pytest.fixture(scope="module")
def weekly_pdf() -> bytes:
    return render.render_pdf(synthetic("weekly"))


def test_pdf_pages_render_with_chinese_text(weekly_pdf: bytes) -> None:
    text, images = _pdf_text(weekly_pdf)
    assert images, "no page"
    assert "城市生命线监测周报" in text
    assert SITE_ZH in text
    assert "红色预警（I级）" in text  # a level in words
    assert "(Asia/Shanghai, UTC+8)" in text  # times name their zone
    assert "无 none" not in text.split("七、说明")[0]  # every section has content
    # The title (top-left, under the 12 mm margin) is drawn: dark pixels where it is.
    first = images[0]
    mm = first.size[1] / 297
    title = first.crop((int(12 * mm), int(12 * mm), int(120 * mm), int(22 * mm)))
    dark = sum(title.histogram()[:128])
    assert dark > 200, f"the title's region is blank ({dark} dark pixels)"


def test_pdf_embeds_a_font_subset(weekly_pdf: bytes) -> None:
    assert re.search(rb"/FontFile[23]?\b", weekly_pdf), "no embedded font file"
    base = re.findall(rb"/BaseFont\s*/([A-Z]{6})\+(\S+)", weekly_pdf)
    assert base, "the font is not a subset (no ABCDEF+ prefix)"
    assert len(weekly_pdf) < 1_500_000  # a subset, not the 20 MB collection


def test_plots_are_pngs_that_decode() -> None:
    pngs = render.plots(synthetic())
    assert set(pngs) == {"levels", "units", "hours"}
    for png in pngs.values():
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.format == "PNG" and im.size[0] > 300


def test_html_is_self_contained_and_escaped() -> None:
    page = render.render_html(synthetic(hostile=True))
    assert page.startswith("<!doctype html>") and 'lang="zh-CN"' in page
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert page.index("城市生命线监测日报") < page.index("Lifeline daily report")
    assert "红色预警（I级） red (level I)" in page
    assert "处置中 in progress" in page  # the state in words
    # Nothing loaded from elsewhere: the plots are data: URIs that decode as PNG.
    assert not re.search(r'(src|href)="(?!data:)', page)
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(sources) == 3
    for b64 in sources:
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            im.load()
    # No internal keys: states, levels and kinds appear in words only.
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<style>.*?</style>", "", page, flags=re.S))
    for key in ("in_progress", "false_alarm", "value-upper", "gateway-offline", "FacilityKind",
                "AlarmLevel", "OrderState", "None"):
        assert key not in text, key
    assert "二级督办（科长）" in page


def test_hostile_names_in_the_pdf() -> None:
    text, _ = _pdf_text(render.render_pdf(synthetic(hostile=True)))
    assert "<script>alert('x')</script>" in text  # shown as text, nothing else


def test_an_empty_period_renders() -> None:
    data = empty()
    page = render.render_html(data)
    assert page.count("无 none") >= 5
    assert "<img" not in page
    text, images = _pdf_text(render.render_pdf(data))
    assert "城市生命线监测日报" in text and text.count("无 none") >= 5
    # The pixel check of the title means something: the empty page's foot (above the
    # page number) is blank, its title is not.
    first = images[0]
    mm = first.size[1] / 297
    assert sum(first.crop((int(12 * mm), int(200 * mm), int(198 * mm),
                           int(280 * mm))).histogram()[:128]) == 0
    assert sum(first.crop((int(12 * mm), int(12 * mm), int(120 * mm),
                           int(22 * mm))).histogram()[:128]) > 200


@pytest.fixture
def no_font(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    render.find_cjk_font.cache_clear()
    monkeypatch.setattr(render, "fc_match", lambda: None)
    monkeypatch.setattr(render, "KNOWN_FONTS", (("/nonexistent/NotoSansCJK.ttc", 2),))
    yield
    render.find_cjk_font.cache_clear()


def test_missing_font_is_a_clear_error(no_font: None) -> None:
    with pytest.raises(FontNotFound, match="fonts-noto-cjk"):
        render.render_pdf(synthetic())
    with pytest.raises(FontNotFound, match="fonts-noto-cjk"):
        render.render_html(synthetic())


def test_a_font_without_chinese_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """fontconfig answers with some font whatever is installed (DejaVu): not a CJK one."""
    import matplotlib

    dejavu = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf"
    render.find_cjk_font.cache_clear()
    monkeypatch.setattr(render, "fc_match", lambda: (dejavu, 0))
    monkeypatch.setattr(render, "KNOWN_FONTS", ())
    try:
        with pytest.raises(FontNotFound):
            render.find_cjk_font()
    finally:
        render.find_cjk_font.cache_clear()


def test_zone_label() -> None:
    assert render.zone_label(TZ, _t(8)) == "Asia/Shanghai, UTC+8"
    assert render.zone_label(ZoneInfo("Asia/Kolkata"), _t(8)) == "Asia/Kolkata, UTC+5:30"
    assert render.local(_t(8), TZ) == "2026-12-01 08:00"


# ------------------------------------------------------------------ assembling (pure)

def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _series(tags: dict[str, str], columns: list[str], values: list[list[Any]]
            ) -> dict[str, Any]:
    return {"name": "m", "tags": tags, "columns": columns, "values": values}


def test_orders_as_they_stood_at_the_end(registry: Registry) -> None:
    period = period_of("daily", DAY, TZ)
    end = period.end
    row = {"order_id": "WO-1", "state": "closed", "facility_id": "CS-KG-001", "level": "orange",
           "kind": "site", "owner_unit": "U", "opened_at": _t(1), "deadline": _t(30),
           "closed_at": _t(27), "escalation": 0}
    history = {"WO-1": {"order_id": "WO-1", "state": "in_progress",
                        "deadline": "2026-12-01T05:00:00.000Z",  # 13:00 local
                        "owner_unit": "U2", "escalation": 1, "verified_at": None,
                        "closed_at": None}}
    (o,) = order_rows([row], history, registry, period, end)
    assert o.state is OrderState.IN_PROGRESS and o.closed_at is None  # closed after the day
    assert o.owner_unit == "U2" and o.escalation == 1
    assert o.overdue  # deadline 13:00, unhandled at midnight
    assert o.name_zh == SITE_ZH
    # Verified before its deadline: not overdue, even if closed later.
    history["WO-1"].update(verified_at=_t(12), state="closed", closed_at=_t(20))
    (o,) = order_rows([row], history, registry, period, end)
    assert not o.overdue and o.state is OrderState.CLOSED and o.handling_hours == 19


def test_time_in_alarm_counts_overlaps_once() -> None:
    start, end = _t(0), _t(24)
    events = [_series({"facility": "F"}, ["time", "alarm_id", "severity", "silenced"],
                      [[_ms(_t(1)), "a", 2, False], [_ms(_t(2)), "b", 3, False],
                       [_ms(_t(3)), "a", 0, False], [_ms(_t(4)), "b", 0, False],
                       [_ms(_t(10)), "s", 1, True], [_ms(_t(11)), "s", 0, False]]),
              _series({"facility": "G"}, ["time", "alarm_id", "severity", "silenced"],
                      [[_ms(_t(22)), "c", 0, False]])]
    active = [_series({"facility": "G", "sensor": "x", "rule": "r"},
                      ["time", "severity", "alarm_id", "silenced"], [[0, 2, "c", False]]),
              _series({"facility": "H", "sensor": "x", "rule": "r"},
                      ["time", "severity", "alarm_id", "silenced"], [[0, 1, "d", False]])]
    got = in_alarm_seconds(events, active, start, end)
    assert got == {"F": 3 * 3600, "G": 22 * 3600, "H": 24 * 3600}


def test_completeness_and_dust(registry: Registry) -> None:
    period = period_of("daily", DAY, TZ)
    site = registry.facility("CS-KG-001")
    assert site is not None
    readings = [_series({"facility": "CS-KG-001", "sensor": s.id}, ["time", "n"], [[0, 720]])
                for s in site.sensors]
    kinds, gateways = completeness(readings, registry, 86400)
    (site_kind,) = [c for c in kinds if c.kind is FacilityKind.SITE]
    assert site_kind.received == 720 * len(site.sensors)
    first = next(c for c in gateways if c.facility_id == "CS-KG-001")
    assert first.rate == pytest.approx(0.5)
    assert gateways[0].rate == 0  # the silent gateways first
    hours = [[_ms(_t(h)), 200.0 if h < 21 else 10.0, 60] for h in range(24)]
    dust = [_series({"facility": "CS-KG-001", "sensor": "CS-KG-001-PM10"},
                    ["time", "mean", "n"], hours),
            _series({"facility": "CS-KG-002", "sensor": "CS-KG-002-PM10"},
                    ["time", "mean", "n"], [[_ms(_t(h)), 500.0, 30] for h in range(24)])]
    sites = {s.facility_id: s for s in dust_sites(dust, registry, period, period.end)}
    one, two = sites["CS-KG-001"], sites["CS-KG-002"]
    assert one.days[0].hours == 24 and one.days[0].mean == pytest.approx((21 * 200 + 30) / 24)
    assert one.exceedance_days == 1 and one.compliance_rate == 0
    assert not one.limit_from_registry and one.limit == 150
    assert two.days[0].mean is None and two.compliance_rate is None  # 30 of 60 minutes


def test_queries_are_bounded_to_the_period() -> None:
    period = period_of("weekly", DAY, TZ)
    qs = influx_queries(period, period.end)
    lo, hi = _ms(period.start), _ms(period.end)
    for name, q in qs.items():
        assert f"time < {hi if name != 'active_at_start' else lo}ms" in q, name
        assert "time >= " in q
    assert '"long"."alarm_event"' in qs["alarm_counts"]
    assert '"long"."reading_1m"' in qs["readings"]


def test_assemble_an_empty_period(registry: Registry) -> None:
    period = period_of("daily", DAY, TZ)
    data = assemble(period, registry, datetime(2026, 12, 2, tzinfo=UTC), orders=[], history={},
                    alarm_counts=[], alarm_events=[], active_at_start=[], readings=[], dust=[])
    assert data.alarms.by_level.total == 0 and data.orders == ()
    assert data.online_rate == 0
    assert all(u.opened == 0 for u in data.units)
    assert any("GB 3095-2012" in n.zh for n in data.notes)
    html = render.render_html(data)
    assert "无 none" in html


class _Cursor:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def fetchall(self) -> list[dict[str, Any]]:
        return self.rows


class _Conn:
    """Answers ORDERS_SQL and HISTORY_SQL; records every statement."""

    def __init__(self, orders: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
        self.orders, self.history = orders, history
        self.statements: list[tuple[str, Any]] = []
        self.closed = False

    async def execute(self, sql: str, params: Any = None) -> _Cursor:
        self.statements.append((sql, params))
        if "FROM work_order_event" in sql:
            return _Cursor(self.history)
        if "FROM work_order" in sql:
            return _Cursor(self.orders)
        return _Cursor([])

    async def close(self) -> None:
        self.closed = True


async def test_collect_reads_both_stores_read_only(registry: Registry,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from services.core.settings import InfluxSettings
    from services.reports import collect as collect_module

    order = {"order_id": "WO-1", "state": "open", "facility_id": "CS-KG-001", "level": "red",
             "kind": "site", "owner_unit": "U", "opened_at": _t(1), "deadline": _t(3),
             "closed_at": None, "escalation": 1}
    conn = _Conn([order], [{"order_id": "WO-1", "state": "open", "deadline": None,
                            "owner_unit": None, "escalation": 1, "verified_at": None,
                            "closed_at": None}])
    connected: dict[str, Any] = {}

    async def connect(url: str, **kw: Any) -> _Conn:
        connected.update(kw, url=url)
        return conn

    asked: list[str] = []

    async def query(settings: Any, q: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        asked.append(q)
        if "alarm_event" in q and "count(" in q:
            return [_series({"facility": "CS-KG-001", "kind": "site",
                             "district": "Airport New Area", "level": "orange",
                             "category": "facility", "event": "raised"}, ["time", "n"],
                            [[0, 4]])]
        return []

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    monkeypatch.setattr(collect_module, "query", query)
    data = await collect_module.collect("daily", DAY, store_url="postgresql://x@h/db",
                                        influx=InfluxSettings(), registry=registry, tz=TZ,
                                        now=_t(30))
    assert connected["autocommit"] is True and conn.closed
    assert "READ ONLY" in conn.statements[0][0]
    assert all(s.lstrip().upper().startswith(("SELECT", "SET")) for s, _ in conn.statements)
    assert len(asked) == 5 and all(q.startswith("SELECT") for q in asked)
    assert data.alarms.by_level.orange == 4 and data.alarms.episodes == 4
    assert data.facilities[0].facility_id == "CS-KG-001"
    (o,) = data.orders
    assert o.overdue and o.escalation == 1
    assert data.totals.overdue == 1 and data.totals.open_at_end == 1
    render.render_html(data)  # renders


async def test_collect_maps_a_lost_database(registry: Registry,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    from services.core.settings import InfluxSettings
    from services.reports import collect as collect_module
    from services.reports.data import ReportSourceError

    async def connect(url: str, **kw: Any) -> None:
        raise psycopg.OperationalError("connection to postgresql://secret@host failed")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    with pytest.raises(ReportSourceError) as err:
        await collect_module.collect("daily", DAY, store_url="postgresql://secret@host/db",
                                     influx=InfluxSettings(), registry=registry, tz=TZ,
                                     now=_t(30))
    assert "secret" not in str(err.value) and "OperationalError" in str(err.value)
