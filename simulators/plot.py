"""One PNG per storm or incident: the sensors it was expected to alarm on (every sensor with
rules of the facility, for a facility-wide expectation or an incident that expects
nothing), their true and reported values (gaps where nothing was reported), the registry's
thresholds, the incident's window and the alarms raised (dotted: suppressed or silenced)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen: files only
import matplotlib.pyplot as plt

from schemas.alarm import AlarmCategory, AlarmEvent
from schemas.registry import Registry, Signal
from schemas.scenario import Scenario

COLOURS = {"blue": "#1677ff", "yellow": "#d4b106", "orange": "#fa8c16", "red": "#d4380d"}


def plot_incidents(scenario: Scenario, registry: Registry, truth: dict[str, Any],
                   alarms: list[AlarmEvent], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = float(truth["t0"])
    series: dict[str, list[list[float | None]]] = truth["truth"]
    written = []
    items: list[tuple[str, float, float, list[tuple[str, str | None]]]] = []
    for st in scenario.storms:
        items.append((st.name, st.start_s, st.duration_s,
                      [(e.facility, e.sensor) for e in st.expect]))
    for inc in scenario.incidents:
        items.append((inc.name, inc.start_s, inc.duration_s,
                      [(e.facility, e.sensor) for e in inc.expect] or [(inc.facility, None)]))
    for name, start, duration, targets in items:
        keys = []
        for fid, sid in targets:
            f = registry.facility(fid)
            if f is None:
                continue
            if sid == fid:
                sid = None  # a facility-wide alarm: all its sensors
            for s in f.sensors:
                if (sid is None or s.id == sid) and f"{fid}/{s.id}" in series and \
                        f"{fid}/{s.id}" not in keys and s.rules:
                    keys.append(f"{fid}/{s.id}")
        keys = keys[:6]
        if not keys:
            continue
        fig, axes = plt.subplots(len(keys), 1, figsize=(10, 2.4 * len(keys)), sharex=True,
                                 squeeze=False)
        for ax, key in zip(axes[:, 0], keys, strict=True):
            fid, sid = key.split("/")
            rows = series[key]
            hours = [r[0] / 3600 for r in rows]  # type: ignore[operator]
            ax.plot(hours, [r[1] for r in rows], lw=1, color="#555", label="true")
            if any(r[1] != r[2] for r in rows):  # nothing reported: a gap in the line
                ax.plot(hours, [math.nan if r[2] is None else r[2] for r in rows], lw=0.8,
                        color="#9254de", label="reported")
            sensor = registry.sensor(fid, sid)
            if sensor is not None:
                for rule in sensor.rules:
                    if rule.signal is not Signal.VALUE:
                        continue
                    for lv in rule.levels:
                        ax.axhline(lv.raise_at, color=COLOURS[lv.level.value], lw=0.8, ls="--")
            ax.axvspan(start / 3600, (start + duration) / 3600, color="#ffd8bf", alpha=0.4)
            for ev in alarms:
                if ev.facility_id == fid and ev.category is AlarmCategory.FACILITY and \
                        ev.event.value in ("raised", "escalated") and ev.level is not None:
                    x = (ev.ts.timestamp() - t0) / 3600
                    ax.axvline(x, color=COLOURS[ev.level.value],
                               lw=1.5 if ev.sensor in (sid, fid) else 0.5,
                               ls=":" if ev.silenced or ev.suppressed_by else "-")
            ax.set_ylabel(f"{sid}\n({sensor.unit if sensor else ''})", fontsize=8)
        axes[-1, 0].set_xlabel("hours since the scenario's start")
        axes[0, 0].set_title(f"{scenario.name}: {name} (shaded) — dashed: thresholds, "
                             "vertical: alarms raised", fontsize=9)
        fig.tight_layout()
        path = out / f"{scenario.name}-{name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def plot_summary(scenario: Scenario, result: Any, alarms: list[AlarmEvent], t0: float,
                 out: Path) -> Path:
    """``summary.png``, one page per scenario: precision and recall overall and per kind
    (and per hazard when the truth is the physics), the detection delays with their p50 and
    p90, and a timeline of the facility alarms raised (by level) over the storms and
    incidents, false alarms crossed and risk left without an alarm underlined. ``result`` is
    a :class:`simulators.scoring.Score`."""
    out.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(11, 8.5))
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.2])
    ax_pr, ax_delay, ax_time = (fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]),
                                fig.add_subplot(grid[1, :]))

    slices = [("all", result.overall), *((f"kind {k}", v) for k, v in
                                         sorted(result.by_kind.items())),
              *((f"hazard {k}", v) for k, v in sorted(result.by_hazard.items()))]
    names = [n for n, _ in slices]
    ys = range(len(slices))
    for offset, attr, colour in ((-0.2, "precision", "#1677ff"), (0.2, "recall", "#52c41a")):
        values = [getattr(t, attr) for _, t in slices]
        ax_pr.barh([y + offset for y in ys], [0 if v is None else 100 * v for v in values],
                   height=0.38, color=colour, label=attr)
        for y, v in zip(ys, values, strict=True):
            ax_pr.text(1, y + offset, "n/a" if v is None else f"{100 * v:.0f}%", va="center",
                       fontsize=7, color="white" if v else "#555")
    ax_pr.set_yticks(list(ys), names, fontsize=8)
    ax_pr.invert_yaxis()
    ax_pr.set_xlim(0, 100)
    ax_pr.set_xlabel("%")
    ax_pr.legend(fontsize=7, loc="lower right")
    ax_pr.set_title(f"precision and recall (truth: {result.truth})", fontsize=9)

    delays = sorted(result.delays_s)
    if delays:
        ax_delay.bar(range(len(delays)), [d / 60 for d in delays], color="#8c8c8c")
        for p, style in ((50, "--"), (90, ":")):
            v = result.delay_percentile(p)
            if v is not None:
                ax_delay.axhline(v / 60, color="#d4380d", ls=style, lw=1, label=f"p{p} {v:.0f} s")
        ax_delay.legend(fontsize=7)
        ax_delay.set_xticks(range(len(delays)), [str(i + 1) for i in range(len(delays))]
                            if len(delays) <= 30 else [""] * len(delays), fontsize=7)
        ax_delay.axhline(0, color="#555", lw=0.5)
    else:
        ax_delay.text(0.5, 0.5, "no detected episode", ha="center", va="center",
                      transform=ax_delay.transAxes, fontsize=9, color="#555")
    ax_delay.set_ylabel("minutes")
    ax_delay.set_xlabel("detected episodes, fastest first")
    ax_delay.set_title("detection delay (below 0: warned before the risk began)", fontsize=9)

    for st in scenario.storms:
        ax_time.axvspan(st.start_s / 3600, (st.start_s + st.duration_s) / 3600,
                        color="#bae0ff", alpha=0.5)
    for inc in scenario.incidents:
        ax_time.axvspan(inc.start_s / 3600, (inc.start_s + inc.duration_s) / 3600,
                        color="#ffd8bf", alpha=0.5)
    facilities = sorted({ev.facility_id for ev in alarms
                         if ev.category is AlarmCategory.FACILITY})
    row_of = {f: i for i, f in enumerate(facilities)}
    for ev in alarms:
        if (ev.category is AlarmCategory.FACILITY and ev.level is not None
                and ev.event.value in ("raised", "escalated")):
            ax_time.scatter((ev.ts.timestamp() - t0) / 3600, row_of[ev.facility_id], s=14,
                            color=COLOURS[ev.level.value], zorder=3)
    for fa in result.false_alarms:
        if fa["facility"] in row_of:
            ax_time.scatter(fa["t_s"] / 3600, row_of[fa["facility"]], marker="x", s=40,
                            color="black", zorder=4)
    for miss in result.missed_risk:
        if miss["facility"] in row_of:
            ax_time.hlines(row_of[miss["facility"]], miss["start_s"] / 3600,
                           miss["end_s"] / 3600, color="#d4380d", lw=2)
    ax_time.set_yticks(range(len(facilities)), facilities if len(facilities) <= 40 else
                       [""] * len(facilities), fontsize=6)
    ax_time.set_xlabel("hours since the scenario's start (blue: storms, orange: incidents)")
    ax_time.set_title("facility alarms raised (dots by level; x: false alarm; red line: risk "
                      "with no alarm)", fontsize=9)

    p50 = result.delay_percentile(50)
    fig.suptitle(f"{scenario.name}: precision {_pct(result.precision)}, recall "
                 f"{_pct(result.recall)}, delay p50 "
                 f"{'-' if p50 is None else f'{p50:.0f} s'}, "
                 f"{len(result.false_alarms)} false alarms "
                 f"({result.false_alarm_rate:.3f} per 1,000 sensor-hours)", fontsize=10)
    fig.tight_layout()
    path = out / "summary.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"
