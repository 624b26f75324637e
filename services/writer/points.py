"""The InfluxDB schema: how readings and alarm events become points.

Measurements and tags (ids and levels are tags, bounded by the registry; values and text
are fields). Every point's time is the event time in milliseconds, so a replayed or
duplicated reading overwrites its own point instead of adding one.

- ``reading``     tags facility, sensor, kind, metric, district; fields value (float), seq (int),
                  fill (h/D, water levels of sensors with ``pipe_diameter_m``), baseline
                  (sewage flow and level: the usual value at that local hour, see
                  services/writer/baseline.py)
- ``alarm_event`` tags facility, sensor, kind, metric, district, rule, event, level, category;
                  fields alarm_id, event_id, value, threshold, severity, previous_level, message,
                  silenced, flapping, suppressed_by ("" when not suppressed), held_by_fault,
                  entry (a confined-space entry was in progress), facility_name,
                  facility_name_zh (from the registry when written)
- ``alarm_state`` tags facility, sensor, rule, category, kind, district; fields alarm_id,
                  active, level, severity (0 when cleared), event, message, silenced,
                  suppressed, flapping, held, stale_since, entry, facility_name,
                  facility_name_zh (registry names, the id for an unknown facility), since
                  and since_ms (RFC 3339 and epoch ms, written when raised),
                  acked_by/acked_at/
                  ack_comment/resolved ("" reset when the alarm is raised or escalated; set
                  by acknowledgements from lifeline.oncall, written into the same series
                  just after the alarm's latest event: ``state_ts``) — ``last()`` per
                  series is the alarm's current state, acknowledgement included (no join)
- ``oncall``      (``long``) the on-call audit trail: tags facility, sensor, kind, type,
                  team, channel, level; fields alarm_id, record_id, notification_id, person,
                  notification (page/repeat/cleared), step, repeat, ok, detail. Nanosecond
                  time: the record's wall-clock ms plus a sub-ms offset from its id, so
                  records of one ms do not overwrite each other and a redelivered record
                  overwrites itself
- ``pipeline``    tags service, instance; fields healthy and every numeric counter of the
                  service (accepted_readings, rejected_messages, processed_readings, lag,
                  stored_points, sink_retries, …), from ``lifeline.health`` every 10 s
- ``facility``    (``long``) tags facility, kind, district; fields lat, lon, name, name_zh,
                  sensors — the registry, written by the writer at start (time 0)
- ``reading_1m`` (retention policy ``long``) mean, min, max per reading series and minute,
                  computed by the writer from these lines (services/writer/rollup.py);
                  ``reading_1h`` (per series) and ``district_1h`` (per district, kind,
                  metric and partition) from those minutes, by the writer too

Sensor health is the ``alarm_event``/``alarm_state`` series with category ``sensor`` or
``gateway`` (offline, stuck, out of range, sequence gaps).
"""

from __future__ import annotations

from influxdb_client.client.write.point import Point
from influxdb_client.domain.write_precision import WritePrecision

from schemas.alarm import AlarmEvent, AlarmEventType
from schemas.codec import HEALTH, READING_BATCH
from schemas.common import to_epoch_ms
from schemas.oncall import OnCallRecord, RecordType
from schemas.reading import ReadingBatch
from schemas.registry import Registry
from schemas.storage import Measurement, Tag
from services.writer.baseline import DiurnalBaseline

# The names are schemas/storage.py's (the layout the dashboards and every reader share).
READING = Measurement.READING
ALARM_EVENT = Measurement.ALARM_EVENT
ALARM_STATE = Measurement.ALARM_STATE
PIPELINE = Measurement.PIPELINE
FACILITY = Measurement.FACILITY
ONCALL = Measurement.ONCALL


# The same escapes as influxdb-client's Point for tag keys and values.
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n", "\t": r"\t",
                              "\r": r"\r"})


def _tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)




def _fill(value: float, diameter: float | None) -> str:
    """``fill=<h/D>,`` for a water level in a pipe of known diameter (fields sort first)."""
    return f"fill={_float(value / diameter)}," if diameter else ""


def _float(value: float) -> str:
    # influxdb-client writes floats with repr(); integral floats lose their ".0", which
    # line protocol still reads as a float (an integer would need the "i" suffix).
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


class PointBuilder:
    def __init__(self, registry: Registry, baseline: DiurnalBaseline | None = None) -> None:
        self.registry = registry
        self.baseline = baseline

    @property
    def registry(self) -> Registry:
        """The registry every lookup goes through (names, districts, pipe diameters):
        assigning a new one (a reload) takes effect from the next point built."""
        return self._registry

    @registry.setter
    def registry(self, registry: Registry) -> None:
        self._registry = registry
        self._district = {f.id: f.district for f in registry.facilities}
        # Water levels in pipes also carry the fill ratio h/D (the drainage dashboard).
        self._diameter = {(f.id, s.id): s.pipe_diameter_m for f in registry.facilities
                          for s in f.sensors if s.pipe_diameter_m}

    def _names(self, facility_id: str) -> tuple[str, str]:
        """(English, Chinese) name of a facility for the alarm tables; the id when the
        registry does not know it (an alarm of a facility since removed)."""
        f = self.registry.facility(facility_id)
        if f is None:
            return facility_id, facility_id
        return f.name, f.name_zh or f.name

    def facilities(self) -> list[str]:
        """One ``facility`` point per registered facility (coordinates and names for the
        overview map), at a fixed time so rewriting them at every start overwrites."""
        out = []
        for f in self.registry.facilities:
            p = (Point(FACILITY).tag(Tag.FACILITY, f.id).tag(Tag.KIND, f.kind.value)
                 .tag(Tag.DISTRICT, f.district).field("lat", f.lat).field("lon", f.lon)
                 .field("name", f.name).field("name_zh", f.name_zh or f.name)
                 .field("sensors", len(f.sensors)).time(0, WritePrecision.MS))
            out.append(p.to_line_protocol())
        return out

    def readings(self, batch: ReadingBatch) -> list[str]:
        """Line protocol of a batch's readings.

        The hot path of the writer, formatted here rather than with influxdb-client's
        ``Point`` (measured: ~9 µs per point with ``Point``, under 2 µs here); a unit test
        checks both produce the same line for every kind of value.
        """
        fid = _tag(batch.facility_id)
        head = (f"{READING},district={_tag(self._district.get(batch.facility_id, 'unknown'))},"
                f"facility={fid},kind={batch.kind.value},")
        seq = batch.seq
        diameter = self._diameter
        fid = batch.facility_id
        return [f"{head}metric={r.metric.value},sensor={_tag(r.sensor)} "
                f"{self._baseline(fid, r.sensor, to_epoch_ms(r.ts), r.value)}"
                f"{_fill(r.value, diameter.get((fid, r.sensor)))}"
                f"seq={seq}i,value={_float(r.value)} {to_epoch_ms(r.ts)}"
                for r in batch.readings]

    def _baseline(self, fid: str, sensor: str, ts_ms: int, value: float) -> str:
        """``baseline=<usual value at this hour>,`` for sewage flow and level (sorted first)."""
        b = self.baseline
        if b is None or not b.watches(fid, sensor):
            return ""
        usual = b.update(fid, sensor, ts_ms, float(value))
        return "" if usual is None else f"baseline={_float(usual)},"

    def readings_raw(self, raw: bytes) -> list[str]:
        """Line protocol straight from a ``lifeline.readings`` value — the writer's hot path.

        Decoded by ``schemas.codec.READING_BATCH.decode_plain`` (the contract's checks on
        plain values, no models); anything not exactly plain — a missing key, a wrong type,
        an id outside the contract's alphabet, a non-finite value, a timestamp without
        offset — takes the strict ``READING_BATCH.decode``, which accepts it or raises the
        precise error for the dead-letter topic. A unit test checks both paths give the
        same lines.
        """
        plain = READING_BATCH.decode_plain(raw)
        if plain is None:
            return self.readings(READING_BATCH.decode(raw))
        fid, kind, seq, checked = plain
        head = (f"{READING},district={_tag(self._district.get(fid, 'unknown'))},"
                f"facility={_tag(fid)},kind={kind},")
        # Only now, with the whole event checked, anything is learned or built.
        return [f"{head}metric={metric},sensor={_tag(sensor)} "
                f"{self._baseline(fid, sensor, t_ms, value)}"
                f"{_fill(value, self._diameter.get((fid, sensor)))}"
                f"seq={seq}i,value={_float(value)} {t_ms}"
                for sensor, metric, value, t_ms in checked]

    def readings_with_point(self, batch: ReadingBatch) -> list[str]:
        """The same lines built with influxdb-client's ``Point`` (the reference)."""
        district = self._district.get(batch.facility_id, "unknown")
        out = []
        for r in batch.readings:
            p = (Point(READING).tag(Tag.FACILITY, batch.facility_id).tag(Tag.SENSOR, r.sensor)
                 .tag(Tag.KIND, batch.kind.value).tag(Tag.METRIC, r.metric.value)
                 .tag(Tag.DISTRICT, district)
                 .field("value", float(r.value)).field("seq", batch.seq)
                 .time(to_epoch_ms(r.ts), WritePrecision.MS))
            d = self._diameter.get((batch.facility_id, r.sensor))
            if d:
                p.field("fill", float(r.value) / d)
            out.append(p.to_line_protocol())
        return out

    def alarm(self, ev: AlarmEvent) -> str:
        name, name_zh = self._names(ev.facility_id)
        p = (Point(ALARM_EVENT).tag(Tag.FACILITY, ev.facility_id).tag(Tag.SENSOR, ev.sensor)
             .tag(Tag.KIND, ev.kind.value)
             .tag(Tag.METRIC, ev.metric.value if ev.metric else "none")
             .tag(Tag.DISTRICT, self._district.get(ev.facility_id, "unknown"))
             .tag(Tag.RULE, ev.rule).tag(Tag.EVENT, ev.event.value)
             .tag(Tag.LEVEL, ev.level.value if ev.level else "none")
             .tag(Tag.CATEGORY, ev.category.value)
             .field("alarm_id", ev.alarm_id).field("event_id", ev.event_id)
             .field("silenced", ev.silenced).field("flapping", ev.flapping)
             .field("suppressed_by", ev.suppressed_by or "")
             .field("held_by_fault", ev.held_by_fault or "")
             .field("entry", ev.entry is not None)
             .field("severity", ev.level.severity if ev.level else 0)
             .field("previous_level", ev.previous_level.value if ev.previous_level else "none")
             .field("message", ev.message)
             .field("facility_name", name).field("facility_name_zh", name_zh)
             .time(to_epoch_ms(ev.ts), WritePrecision.MS))
        if ev.value is not None:
            p.field("value", float(ev.value))
        if ev.threshold is not None:
            p.field("threshold", float(ev.threshold))
        line: str = p.to_line_protocol()
        return line

    @staticmethod
    def pipeline(raw: bytes) -> str:
        """One ``lifeline.health`` record as a ``pipeline`` point (numeric counters only)."""
        rec = HEALTH.decode(raw)  # ValueError when it is not a health record
        try:
            p = (Point(PIPELINE).tag(Tag.SERVICE, str(rec["service"]))
                 .tag(Tag.INSTANCE, str(rec["instance"]))
                 .field("healthy", bool(rec.get("healthy", rec["status"] == "ok")))
                 .time(int(rec["ts"]), WritePrecision.MS))
            for name, value in rec["counters"].items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    p.field(str(name), float(value))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a pipeline health record: {exc!r}") from exc
        line: str = p.to_line_protocol()
        return line

    def alarm_state(self, ev: AlarmEvent) -> str:
        """The alarm's state after this event: ``last()`` per series is the current state
        (the active-alarm tables read ``severity > 0``)."""
        active = ev.level is not None
        name, name_zh = self._names(ev.facility_id)
        p = (Point(ALARM_STATE).tag(Tag.FACILITY, ev.facility_id).tag(Tag.SENSOR, ev.sensor)
             .tag(Tag.RULE, ev.rule).tag(Tag.CATEGORY, ev.category.value)
             .tag(Tag.KIND, ev.kind.value)
             .tag(Tag.DISTRICT, self._district.get(ev.facility_id, "unknown"))
             .field("alarm_id", ev.alarm_id).field("active", active)
             .field("level", ev.level.value if ev.level else "none")
             .field("severity", ev.level.severity if ev.level else 0)
             .field("event", ev.event.value).field("message", ev.message)
             .field("silenced", ev.silenced).field("suppressed", ev.suppressed_by is not None)
             .field("flapping", ev.flapping).field("held", ev.held_by_fault is not None)
             .field("stale_since", ev.stale_since.isoformat(timespec="seconds")
                    if ev.stale_since else "")
             .field("entry", ev.entry is not None)
             .field("facility_name", name).field("facility_name_zh", name_zh)
             .time(to_epoch_ms(ev.ts), WritePrecision.MS))
        if ev.event is AlarmEventType.RAISED:
            p.field("since", ev.ts.isoformat(timespec="seconds"))
            # Epoch ms of the same moment: the active-alarm table's link to the alarm's
            # history opens its time range there (Grafana reads epoch ms in URLs).
            p.field("since_ms", to_epoch_ms(ev.ts))
        if ev.event in (AlarmEventType.RAISED, AlarmEventType.ESCALATED):
            # A new episode or a worse level is not acknowledged (yet): the notifier
            # re-pages a worse level, so an older acknowledgement no longer holds.
            p.field("acked_by", "").field("acked_at", "").field("ack_comment", "")
            p.field("resolved", False)  # a worse level re-opens a resolved alarm too
        line: str = p.to_line_protocol()
        return line

    @staticmethod
    def oncall(rec: OnCallRecord) -> str:
        """The record as an ``oncall`` point (nanosecond precision)."""
        offset = int(rec.record_id.replace("-", "")[:8], 16) % 1_000_000
        p = (Point(ONCALL).tag(Tag.FACILITY, rec.facility_id).tag(Tag.SENSOR, rec.sensor or "none")
             .tag(Tag.KIND, rec.facility_kind.value if rec.facility_kind else "none")
             .tag(Tag.TYPE, rec.type.value).tag(Tag.TEAM, rec.team or "none")
             .tag(Tag.CHANNEL, rec.channel or "none")
             .tag(Tag.LEVEL, rec.level.value if rec.level else "none")
             .field("alarm_id", rec.alarm_id).field("record_id", rec.record_id)
             .field("notification_id", rec.notification_id or "")
             .field("person", rec.person or "").field("notification", rec.kind or "")
             .field("detail", rec.detail)
             .time(to_epoch_ms(rec.ts) * 1_000_000 + offset, WritePrecision.NS))
        if rec.step is not None:
            p.field("step", rec.step)
        if rec.repeat is not None:
            p.field("repeat", rec.repeat)
        if rec.ok is not None:
            p.field("ok", rec.ok)
        line: str = p.to_line_protocol()
        return line

    def ack_state(self, rec: OnCallRecord) -> str | None:
        """``alarm_state`` fields for an acknowledgement (None for other records)."""
        if rec.type not in (RecordType.ACKNOWLEDGED, RecordType.RESOLVED) or not rec.sensor:
            return None
        p = (Point(ALARM_STATE).tag(Tag.FACILITY, rec.facility_id).tag(Tag.SENSOR, rec.sensor)
             .tag(Tag.RULE, rec.rule or "none").tag(Tag.CATEGORY, rec.category or "facility")
             .tag(Tag.KIND, rec.facility_kind.value if rec.facility_kind else "none")
             .tag(Tag.DISTRICT, self._district.get(rec.facility_id, "unknown"))
             .field("alarm_id", rec.alarm_id)
             .field("acked_by", rec.person or "").field("acked_at", rec.ts.isoformat())
             .field("ack_comment", rec.detail[:500]).field("resolved",
                                                           rec.type is RecordType.RESOLVED)
             .time(to_epoch_ms(rec.state_ts or rec.ts), WritePrecision.MS))
        line: str = p.to_line_protocol()
        return line
