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
