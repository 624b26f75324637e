"""Render a report (:class:`~services.reports.data.ReportData`) as HTML or PDF.

- :func:`render_html`: one self-contained page (``lang="zh-CN"``, the look of the
  notifier's pages: ``services.notifier.web.shell``), plots embedded as ``data:`` PNG and
  no other resource, every text escaped.
- :func:`render_pdf`: A4 with fpdf2, a CJK font embedded as a subset (only the glyphs
  used), the same sections and plots.

Chinese first, English after it; levels, kinds and order states in the words of
``schemas.texts``, never internal keys; times in the report's zone, named with its UTC
offset. The plots (matplotlib, Agg, no pyplot state) draw with the same CJK font file,
registered with matplotlib's font manager. :func:`find_cjk_font` looks for it with
fontconfig and at Debian's path; without one both renderers raise :class:`FontNotFound`
naming the package to install (``fonts-noto-cjk``).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from schemas.kinds import AlarmLevel
from schemas.texts import Bi, kind_words, level_words, order_state_words
from services.notifier.web import shell
from services.reports.data import (
    LEVELS_WORST_FIRST,
    FontNotFound,
    ReportData,
    ReportKind,
)

FONT_PACKAGE = "fonts-noto-cjk"
FONT_QUERY = "Noto Sans CJK SC:lang=zh-cn"
KNOWN_FONTS: tuple[tuple[str, int], ...] = (
    # Debian's fonts-noto-cjk: face 2 of the collection is Simplified Chinese.
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 2),
)
LEVEL_COLOURS: dict[AlarmLevel, str] = {AlarmLevel.RED: "#d4380d",
                                        AlarmLevel.ORANGE: "#fa8c16",
                                        AlarmLevel.YELLOW: "#d4b106",
                                        AlarmLevel.BLUE: "#1677ff"}
TITLES: dict[ReportKind, Bi] = {"daily": Bi("城市生命线监测日报", "Lifeline daily report"),
                                "weekly": Bi("城市生命线监测周报", "Lifeline weekly report")}
NONE = "无 none"
MAX_LISTED_ORDERS = 300  # more are counted, not listed
MAX_LISTED_GATEWAYS = 20  # the lowest online rates
DPI = 110


# ------------------------------------------------------------------ the CJK font

@dataclass(frozen=True)
class CjkFont:
    """A font file (a face of it) that draws Chinese."""

    path: str
    index: int  # the face in a collection (.ttc)
    family: str


def fc_match() -> tuple[str, int] | None:
    """fontconfig's best match for Noto Sans CJK SC (file, face), None without fontconfig.
    fontconfig answers with some font whatever is installed: the caller checks it."""
    try:
        done = subprocess.run(["fc-match", "-f", "%{file}\n%{index}", FONT_QUERY],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    if done.returncode != 0 or not lines or not lines[0]:
        return None
    try:
        index = int(lines[1]) if len(lines) > 1 else 0
    except ValueError:
        index = 0
    return lines[0], index


def _cjk_face(path: str, index: int) -> CjkFont | None:
    """The face if it exists and has Chinese glyphs."""
    from matplotlib import ft2font

    try:
        face = ft2font.FT2Font(path, face_index=index)
    except (OSError, RuntimeError, ValueError):
        return None
    if not all(face.get_char_index(ord(c)) for c in "中文报告"):
        return None
    return CjkFont(path=path, index=index, family=str(face.family_name))


@functools.cache
def find_cjk_font() -> CjkFont:
    """The CJK font of the reports: fontconfig's match for Noto Sans CJK SC, else Debian's
    path; :class:`FontNotFound` when neither draws Chinese."""
    candidates = [c for c in (fc_match(),) if c is not None] + list(KNOWN_FONTS)
    for path, index in candidates:
        font = _cjk_face(path, index)
        if font is not None:
            return font
    raise FontNotFound(
        "no CJK font found to draw the report's Chinese text and plot labels (looked for "
        f"{FONT_QUERY.split(':')[0]} with fontconfig and at "
        f"{', '.join(p for p, _ in KNOWN_FONTS)}): install the Debian package "
        f"{FONT_PACKAGE} (apt-get install {FONT_PACKAGE})")


# ------------------------------------------------------------------ words and numbers

def zone_label(zone: ZoneInfo, at: datetime) -> str:
    """``Asia/Shanghai, UTC+8``."""
    off = at.astimezone(zone).utcoffset() or timedelta()
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    h, m = divmod(abs(minutes), 60)
    return f"{zone.key}, UTC{sign}{h}" + (f":{m:02d}" if m else "")


def local(t: datetime | None, zone: ZoneInfo) -> str:
    return "—" if t is None else t.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def _bi(b: Bi) -> str:
    return str(b)


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _hours(h: float | None) -> str:
    return "—" if h is None else f"{h:.1f}"


def _dur(seconds: float) -> str:
    return f"{seconds / 3600:.1f}"


def _name(name_zh: str | None, name: str, fid: str) -> str:
    """``空港新区在建工地1号 Airport New Area construction site 1 [CS-KG-001]``."""
    head = " ".join(dict.fromkeys(x for x in (name_zh, name) if x))
    return f"{head} [{fid}]" if head and head != fid else fid


ESCALATION_WORDS = {0: Bi("未督办", "not escalated"), 1: Bi("一级督办（单位负责人）", "1 (unit manager)"),
                    2: Bi("二级督办（科长）", "2 (section chief)")}


def escalation_words(n: int) -> str:
    return _bi(ESCALATION_WORDS.get(n, Bi(f"{n}级督办", f"level {n}")))


def _yes(flag: bool) -> str:
    return "是 yes" if flag else "否 no"


def title(data: ReportData) -> Bi:
    return TITLES[data.period.kind]


def period_words(data: ReportData) -> str:
    p = data.period
    z = p.zone
    return f"{local(p.start, z)} – {local(p.end, z)} ({zone_label(z, p.start)})"


def _dates(data: ReportData) -> str:
    days = data.period.days
    first = days[0].isoformat()
    return first if len(days) == 1 else f"{first} – {days[-1].isoformat()}"


# ------------------------------------------------------------------ the sections as tables

Cell = str | tuple[str, AlarmLevel]  # text, or text drawn in the level's colour


@dataclass(frozen=True)
class Table:
    """One table of a section, the same for HTML and PDF."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    widths: tuple[float, ...]  # relative (PDF)
    note: str = ""


@dataclass(frozen=True)
class Section:
    """One numbered section: its paragraphs, tables and plots, or "无 none"."""

    title: str
    intro: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    plots: tuple[tuple[str, bytes], ...] = ()  # (caption, PNG)
    empty: bool = False  # nothing in the period: "无 none"


def _level_cell(level: AlarmLevel | None) -> Cell:
    if level is None:
        return "—"
    return (_bi(level_words(level)), level)


def _summary(data: ReportData) -> Section:
    a, t = data.alarms, data.totals
    z = data.period.zone
    levels = "，".join(f"{level_words(lv).zh} {a.by_level.of(lv)}" for lv in LEVELS_WORST_FIRST)
    faults = sum(g.counts.total for g in a.faults)
    dust_days = sum(s.exceedance_days for s in data.dust)
    rows: list[tuple[Cell, ...]] = [
        ("统计时段 Period", period_words(data)),
        ("生成时间 Generated", f"{local(data.generated_at, z)} ({zone_label(z, data.generated_at)})"),
        ("设施告警 Facility alarms",
         f"{a.by_level.total}（新发 {a.episodes} new episodes）：{levels}"),
        ("设备故障 Sensor and gateway faults", str(faults)),
        ("工单 Work orders",
         f"新增 opened {t.opened}，销号 closed {t.closed}，误报 false alarms {t.false_alarm}，"
         f"逾期 overdue {t.overdue}，期末未办结 open at the end {t.open_at_end}"),
        ("处置时长 Handling time (opened → closed)",
         NONE if t.max_hours is None else
         f"中位 median {_hours(t.median_hours)} h，最长 max {_hours(t.max_hours)} h"),
        ("数据完整率 Data completeness", _pct(data.online_rate)),
    ]
    if data.dust:
        rows.append(("扬尘超标日 Dust exceedance days",
                     f"{dust_days}（{len(data.dust)} 个工地 sites）"))
    return Section("一、概况 Summary", tables=(Table(("项目 Item", "数值 Value"), tuple(rows),
                                                   (1, 2.6)),))


def _level_headers() -> tuple[str, ...]:
    return tuple(_bi(level_words(lv)) for lv in LEVELS_WORST_FIRST)


def _alarms(data: ReportData, pngs: dict[str, bytes]) -> Section:
    a = data.alarms
    if a.by_level.total == 0 and not a.faults:
        return Section("二、告警统计 Alarms", empty=True)
    heads = ("", *_level_headers(), "合计 Total")
    widths = (2.2, 1.2, 1.2, 1.2, 1.2, 0.8)
    tables = []

    def counts_row(label: str, c: Any) -> tuple[Cell, ...]:
        return (label, *(str(c.of(lv)) for lv in LEVELS_WORST_FIRST), str(c.total))

    tables.append(Table(("级别 Level", *heads[1:]), (counts_row("设施告警 Facility alarms",
                                                                a.by_level),), widths))
    if a.by_kind:
        tables.append(Table(("设施类型 Kind", *heads[1:]),
                            tuple(counts_row(_bi(g.label), g.counts) for g in a.by_kind),
                            widths))
    if a.by_district:
        tables.append(Table(("区域 District", *heads[1:]),
                            tuple(counts_row(_bi(g.label), g.counts) for g in a.by_district),
                            widths))
    if a.faults:
        tables.append(Table(("设备故障 Faults", *heads[1:]),
                            tuple(counts_row(_bi(g.label), g.counts) for g in a.faults),
                            widths))
    plots = (("按级别的告警 Alarms by level", pngs["levels"]),) if "levels" in pngs else ()
    return Section("二、告警统计 Alarms",
                   intro=("每级为本期发布或升级到该级别的告警次数 "
                          "Each level: alarms raised at or escalated to it.",),
                   tables=tuple(tables), plots=plots)


def _worst(data: ReportData) -> Section:
    if not data.facilities:
        return Section("三、重点设施 Facilities with the most alarms", empty=True)
    rows = tuple((_name(f.name_zh, f.name, f.facility_id),
                  _bi(kind_words(f.kind)) if f.kind else "—",
                  " ".join(dict.fromkeys(x for x in (f.district_zh, f.district) if x)) or "—",
                  str(f.alarms), _level_cell(f.worst), _dur(f.in_alarm_s), str(f.faults))
                 for f in data.facilities)
    return Section("三、重点设施 Facilities with the most alarms", tables=(Table(
        ("设施 Facility", "类型 Kind", "区域 District", "告警 Alarms", "最高级别 Worst level",
         "告警时长 In alarm (h)", "设备故障 Faults"), rows, (3, 1.2, 1.4, 0.9, 1.6, 1, 0.9)),))


def _orders(data: ReportData, pngs: dict[str, bytes]) -> Section:
    z = data.period.zone
    zl = zone_label(z, data.period.start)
    units = [u for u in data.units if u.opened or u.closed or u.false_alarm or u.overdue
             or u.open_at_end]
    if not data.orders and not units:
        return Section("四、工单 Work orders", empty=True)
    unit_rows = tuple((u.owner_unit, str(u.opened), str(u.closed), str(u.false_alarm),
                       str(u.overdue), str(u.open_at_end), _hours(u.median_hours),
                       _hours(u.max_hours)) for u in units)
    tables = [Table(("权属单位 Owner unit", "新增 Opened", "销号 Closed", "误报 False alarms",
                     "逾期 Overdue", "未办结 Open at end", "中位时长 Median (h)",
                     "最长时长 Max (h)"), unit_rows, (3, 0.9, 0.9, 0.9, 0.9, 1, 1, 1))]
    listed = data.orders[:MAX_LISTED_ORDERS]
    more = len(data.orders) - len(listed)
    rows = tuple((o.order_id, _name(o.name_zh, o.name, o.facility_id), _level_cell(o.level),
                  _bi(order_state_words(o.state)), o.owner_unit, local(o.opened_at, z),
                  local(o.closed_at, z), _yes(o.overdue), escalation_words(o.escalation))
                 for o in listed)
    if rows:
        tables.append(Table(
            ("工单 Order", "设施 Facility", "级别 Level", "状态 State", "权属单位 Unit",
             f"开单 Opened ({zl})", f"办结 Closed ({zl})", "逾期 Overdue",
             "督办 Escalation"), rows, (1.6, 2.2, 1.3, 0.9, 1.7, 1.1, 1.1, 0.7, 1.2),
            note=f"另有 {more} 张工单未列出 {more} more orders not listed" if more else ""))
    plots = tuple((caption, pngs[key]) for key, caption in
                  (("units", "各单位工单 Orders by unit"),
                   ("hours", "各单位处置时长 Handling time by unit")) if key in pngs)
    return Section("四、工单 Work orders", tables=tuple(tables), plots=plots)


def _completeness(data: ReportData) -> Section:
    if not data.completeness_kinds:
        return Section("五、数据完整率 Data completeness", empty=True)
    kinds = tuple((_bi(kind_words(c.kind)) if c.kind else "—", str(c.sensors), str(c.received),
                   str(c.expected), _pct(c.rate)) for c in data.completeness_kinds)
    heads = ("仪表 Sensors", "收到 Received", "应收 Expected", "完整率 Online rate")
    tables = [Table(("设施类型 Kind", *heads), kinds, (2, 1, 1, 1, 1))]
    gws = data.completeness_gateways[:MAX_LISTED_GATEWAYS]
    rest = len(data.completeness_gateways) - len(gws)
    if gws:
        tables.append(Table(
            ("网关（设施） Gateway (facility)", *heads),
            tuple((_name(c.name_zh, c.name or "", c.facility_id or ""), str(c.sensors),
                   str(c.received), str(c.expected), _pct(c.rate)) for c in gws),
            (3, 0.8, 1, 1, 1),
            note=(f"完整率最低的 {len(gws)} 个网关；其余 {rest} 个未列出 the {len(gws)} gateways "
                  f"with the lowest rate; {rest} more not listed") if rest else ""))
    return Section("五、数据完整率 Data completeness", tables=tuple(tables))


def _dust(data: ReportData) -> Section:
    if not data.dust:
        return Section("六、扬尘监测 Construction-site dust (PM10)", empty=True)
    sites = tuple((_name(s.name_zh, s.name, s.facility_id), s.owner_unit or "—",
                   f"{s.limit:g} µg/m³：{s.limit_source}", str(s.valid_days),
                   str(s.exceedance_days), _pct(s.compliance_rate)) for s in data.dust)
    days = tuple((_name(s.name_zh, s.name, s.facility_id), d.day.isoformat(),
                  "—" if d.mean is None else f"{d.mean:.0f}", str(d.hours),
                  ("超标 exceeded" if d.exceeded else "达标 within" if d.mean is not None
                   else "数据不足 too few hours"))
                 for s in data.dust for d in s.days)
    return Section("六、扬尘监测 Construction-site dust (PM10)", tables=(
        Table(("工地 Site", "权属单位 Unit", "日均限值 Daily limit", "有效日 Valid days",
               "超标日 Exceedance days", "达标率 Compliance"), sites,
              (2.4, 1.8, 2.6, 0.8, 0.9, 0.9)),
        Table(("工地 Site", "日期 Day", "日均值 Daily mean (µg/m³)", "有效小时 Valid hours",
               "评价 Result"), days, (3, 1.1, 1.2, 1, 1.4))))


def _notes(data: ReportData) -> Section:
    return Section("七、说明 Notes", intro=tuple(f"{n.zh} {n.en}" for n in data.notes),
                   empty=not data.notes)


def sections(data: ReportData, pngs: dict[str, bytes]) -> tuple[Section, ...]:
    return (_summary(data), _alarms(data, pngs), _worst(data), _orders(data, pngs),
            _completeness(data), _dust(data), _notes(data))


# ------------------------------------------------------------------ plots

def _register(font: CjkFont) -> None:
    from matplotlib import font_manager

    if not any(e.fname == font.path for e in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(font.path)


@contextmanager
def _style(font: CjkFont) -> Iterator[None]:
    import matplotlib

    _register(font)
    with matplotlib.rc_context({"font.family": [font.family], "text.parse_math": False,
                                "axes.unicode_minus": False, "font.size": 9,
                                "axes.spines.top": False, "axes.spines.right": False}):
        yield


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _wrap(text: str, width: int = 18) -> str:
    return textwrap.fill(text, width=width, break_long_words=True)


def plots(data: ReportData, font: CjkFont | None = None) -> dict[str, bytes]:
    """The report's plots as PNG: ``levels`` (alarms by level), ``units`` (orders by unit),
    ``hours`` (handling times by unit); a plot with nothing to show is left out."""
    from matplotlib.ticker import MaxNLocator

    font = font or find_cjk_font()
    out: dict[str, bytes] = {}
    with _style(font):
        counts = data.alarms.by_level
        if counts.total:
            fig = _figure(6.4, 2.6)
            ax = fig.subplots()
            labels = [f"{level_words(lv).zh}\n{level_words(lv).en}" for lv in LEVELS_WORST_FIRST]
            values = [counts.of(lv) for lv in LEVELS_WORST_FIRST]
            bars = ax.bar(labels, values, color=[LEVEL_COLOURS[lv] for lv in LEVELS_WORST_FIRST])
            ax.bar_label(bars, labels=[str(v) for v in values])
            ax.set_ylabel("告警次数 Alarms")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            out["levels"] = _png(fig)
        units = [u for u in data.units if u.opened or u.closed or u.overdue or u.false_alarm]
        if units:
            fig = _figure(6.4, 0.9 + 0.55 * len(units))
            ax = fig.subplots()
            series = (("新增 opened", "opened", "#1677ff"), ("销号 closed", "closed", "#52c41a"),
                      ("误报 false alarm", "false_alarm", "#8c8c8c"),
                      ("逾期 overdue", "overdue", "#d4380d"))
            step = 0.8 / len(series)
            for i, (label, attr, colour) in enumerate(series):
                ys = [j + (i - (len(series) - 1) / 2) * step for j in range(len(units))]
                ax.barh(ys, [getattr(u, attr) for u in units], height=step, label=label,
                        color=colour)
            ax.set_yticks(range(len(units)), [_wrap(u.owner_unit) for u in units])
            ax.invert_yaxis()
            ax.set_xlabel("工单数 Orders")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7,
                      frameon=False)
            out["units"] = _png(fig)
        timed = [u for u in data.units if u.max_hours is not None]
        if timed:
            fig = _figure(6.4, 0.9 + 0.45 * len(timed))
            ax = fig.subplots()
            ys = list(range(len(timed)))
            ax.barh([y - 0.2 for y in ys], [u.median_hours or 0 for u in timed], height=0.4,
                    label="中位 median", color="#1677ff")
            ax.barh([y + 0.2 for y in ys], [u.max_hours or 0 for u in timed], height=0.4,
                    label="最长 max", color="#fa8c16")
            ax.set_yticks(ys, [_wrap(u.owner_unit) for u in timed])
            ax.invert_yaxis()
            ax.set_xlabel("生成工单至销号 Opened to closed (h)")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7,
                      frameon=False)
            out["hours"] = _png(fig)
    return out


# ------------------------------------------------------------------ HTML

# On top of the acknowledgement page's look (services.notifier.web.shell): a wider page for
# the tables, section headings, figures.
_STYLE = """
main{max-width:64rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;
border-bottom:2px solid #1677ff;padding-bottom:.2rem}.lv{padding:.1rem .5rem}.scroll{overflow-x:auto}
table{margin:.5rem 0}td,th{font-size:.85rem;vertical-align:top}th{background:#f4f5f7}
figure{margin:.5rem 0}figure img{max-width:100%}figcaption{color:#555;font-size:.85rem}
.empty{color:#8c8c8c}
"""


def _html_cell(cell: Cell, tag: str = "td") -> str:
    if isinstance(cell, tuple):
        text, level = cell
        return (f'<{tag}><span class="lv {html.escape(level.value)}">'
                f"{html.escape(text)}</span></{tag}>")
    return f"<{tag}>{html.escape(cell)}</{tag}>"


def _html_table(t: Table) -> str:
    head = "".join(_html_cell(h, "th") for h in t.headers)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            f"</table></div>{note}")


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML page (plots as ``data:`` PNG)."""
    pngs = plots(data)
    t = title(data)
    head = (f'<h1 id="title">{html.escape(t.zh)} {html.escape(t.en)}</h1>'
            f'<p class="note">{html.escape(data.registry_name)} · {html.escape(_dates(data))}'
            f" · {html.escape(period_words(data))}</p>")
    parts = [head]
    for s in sections(data, pngs):
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        if s.empty:
            parts.append(f'<p class="empty">{NONE}</p>')
        parts.extend(f'<p class="note">{html.escape(p)}</p>' for p in s.intro)
        parts.extend(_html_table(tb) for tb in s.tables)
        for caption, png in s.plots:
            parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
                         f'{base64.b64encode(png).decode()}"><figcaption>'
                         f"{html.escape(caption)}</figcaption></figure>")
        parts.append("</section>")
    return shell(f"{t.zh} {t.en} {_dates(data)}", "".join(parts), _STYLE)


# ------------------------------------------------------------------ PDF

_FAMILY = "cjk"
_MARGIN = 12.0  # mm
_GREY = (235, 238, 242)


def _pdf_text(text: str) -> str:
    """Control characters (a hostile name's) as spaces: the font has no glyph for them."""
    return "".join(" " if (ord(c) < 32 and c != "\n") or ord(c) == 127 else c for c in text)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def render_pdf(data: ReportData) -> bytes:
    """The report as A4 PDF, the CJK font embedded as a subset."""
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    font = find_cjk_font()
    pngs = plots(data, font)
    t = title(data)
    footer_text = _pdf_text(f"{t.zh} {t.en} · {_dates(data)}")

    class _Doc(FPDF):
        def footer(self) -> None:
            self.set_y(-10)
            self.set_font(_FAMILY, size=7)
            self.set_text_color(140, 140, 140)
            self.cell(0, 5, f"{footer_text} · 第 {self.page_no()} 页 / 共 {{nb}} 页 "
                            f"page {self.page_no()} of {{nb}}", align="C")

    pdf = _Doc(orientation="portrait", unit="mm", format="A4")
    pdf.set_margins(_MARGIN, _MARGIN, _MARGIN)
    pdf.set_auto_page_break(auto=True, margin=14)
    pdf.add_font(_FAMILY, "", font.path, collection_font_number=font.index)
    pdf.set_title(f"{t.zh} {t.en} {_dates(data)}")
    pdf.set_lang("zh-CN")
    pdf.set_creator("Lifeline")
    pdf.add_page()
    width = pdf.w - 2 * _MARGIN

    pdf.set_font(_FAMILY, size=18)
    pdf.set_text_color(29, 33, 41)
    pdf.cell(width, 10, _pdf_text(f"{t.zh} {t.en}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(_FAMILY, size=9)
    pdf.set_text_color(85, 85, 85)
    pdf.multi_cell(width, 5, _pdf_text(f"{data.registry_name} · {_dates(data)} · "
                                       f"{period_words(data)}"), new_x="LMARGIN", new_y="NEXT")
    heading = FontFace(emphasis=None, fill_color=_GREY)

    def table(tb: Table) -> None:
        pdf.set_font(_FAMILY, size=7.5)
        pdf.set_text_color(29, 33, 41)
        with pdf.table(col_widths=tb.widths, width=width, text_align="LEFT",
                       headings_style=heading, line_height=4, padding=1,
                       v_align="TOP") as grid:
            row = grid.row()
            for h in tb.headers:
                row.cell(_pdf_text(h))
            for cells in tb.rows:
                row = grid.row()
                for c in cells:
                    if isinstance(c, tuple):
                        text, level = c
                        row.cell(_pdf_text(text), style=FontFace(
                            color=(255, 255, 255), fill_color=_rgb(LEVEL_COLOURS[level])))
                    else:
                        row.cell(_pdf_text(c))
        if tb.note:
            pdf.set_font(_FAMILY, size=7.5)
            pdf.multi_cell(width, 4, _pdf_text(tb.note), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)

    for s in sections(data, pngs):
        if pdf.get_y() > pdf.h - 40:
            pdf.add_page()
        pdf.ln(3)
        pdf.set_font(_FAMILY, size=13)
        pdf.set_text_color(22, 119, 255)
        pdf.cell(width, 8, _pdf_text(s.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(85, 85, 85)
        pdf.set_font(_FAMILY, size=8.5)
        if s.empty:
            pdf.cell(width, 6, NONE, new_x="LMARGIN", new_y="NEXT")
        for p in s.intro:
            pdf.multi_cell(width, 4.5, _pdf_text(p), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        for tb in s.tables:
            table(tb)
        for caption, png in s.plots:
            _pdf_image(pdf, png, caption, width)
    return bytes(pdf.output())


def _pdf_image(pdf: Any, png: bytes, caption: str, width: float) -> None:
    """A plot at most the text's width, on a new page if it does not fit."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        px_w, px_h = im.size
    w = min(width, px_w / DPI * 25.4)
    h = w * px_h / px_w
    if pdf.get_y() + h + 8 > pdf.h - 14:
        pdf.add_page()
    pdf.image(io.BytesIO(png), x=pdf.l_margin, w=w, h=h)
    pdf.set_font(_FAMILY, size=7.5)
    pdf.set_text_color(85, 85, 85)
    pdf.cell(width, 5, _pdf_text(caption), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)

