"""District rules and shared signals through the real stack, with two processor workers
(decision 0023): a rainstorm over two districts gives one rainstorm alarm per district, the
gauges' own alarms grouped into it; a site's excess over the background station is counted
on whichever worker holds the site — the same events, ids included, as one engine computes
in process."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.alarm import AlarmEvent
from schemas.context import MemberAlarm
from schemas.reading import Reading, ReadingBatch
from schemas.registry import Registry, load_registry
from services.core import topics
from services.processor.engine import AlarmEngine, FacilityState
from services.processor.engine.districts import DistrictBook
from services.processor.handlers import context_records
from simulators.publisher import Publisher
from tests.support.pipeline import (
    DISTRICT_TEST_DISTRICTS,
    Pipeline,
    publish_batches,
    second_processor,
)
from tests.support.stack_helpers import now_ms, topic_records, wait_for

# Facilities of the session's registry no other test reports for (tests/support/pipeline.py):
# a shared stack keeps every sensor's watermark, so the example's own would see this test's
# readings as late after another test's steady round.
DISTRICTS = DISTRICT_TEST_DISTRICTS
SITE, BACKGROUND = "TEST-DUST", "TEST-BG"


def _gauges(reg: Registry) -> list[tuple[str, str]]:
    return [(f.id, s.id) for f in reg.facilities if f.district in DISTRICTS
            for s in f.sensors if s.metric.value == "rainfall"]


def _batches(reg: Registry, t0: int) -> tuple[list[ReadingBatch], list[ReadingBatch]]:
    """(background first, then the rest): a two-hour storm of 10 mm per 5 minutes at every
    gauge of the two test districts; the background station at 60 µg/m³ and a site at 200."""
    first, rest = [], []
    for n in range(1, 61):
        ts = datetime.fromtimestamp((t0 + n * 60_000) / 1000, tz=UTC)
        first.append(ReadingBatch(facility_id=BACKGROUND, kind="site", seq=n, received_at=ts,
                                  readings=[Reading(sensor=f"{BACKGROUND}-PM10", metric="pm10",
                                                    value=60.0, unit="µg/m³", ts=ts)]))
        rest.append(ReadingBatch(facility_id=SITE, kind="site", seq=n, received_at=ts,
                                 readings=[Reading(sensor=f"{SITE}-PM10", metric="pm10",
                                                   value=200.0, unit="µg/m³", ts=ts)]))
    for n in range(1, 25):
        ts = datetime.fromtimestamp((t0 + n * 300_000) / 1000, tz=UTC)
        for fid, sid in _gauges(reg):
            rest.append(ReadingBatch(facility_id=fid, kind="drainage", seq=n, received_at=ts,
                                     readings=[Reading(sensor=sid, metric="rainfall",
                                                       value=10.0, unit="mm", ts=ts)]))
    return first, rest


def _reference(reg: Registry, batches: list[ReadingBatch]) -> tuple[list[AlarmEvent],
                                                                     list[AlarmEvent]]:
    engine, book = AlarmEngine(reg), DistrictBook(reg)
    states: dict[str, FacilityState] = {}
    facility: list[AlarmEvent] = []
    district: list[AlarmEvent] = []
    for b in batches:
        out = engine.evaluate(b, states.setdefault(b.facility_id, FacilityState()))
        facility += out.events
        district += [e for _d, r in context_records(out) if isinstance(r, MemberAlarm)
                     for e in book.apply(r)]
    return facility, district


def test_two_workers_give_one_rainstorm_alarm_per_district(
        pipeline: Pipeline, publisher: Publisher, pipeline_env: dict[str, str],
        registry_file: Path) -> None:
    reg = load_registry(registry_file)
    assert len(_gauges(reg)) == 6 and reg.district_rules
    t0 = now_ms() - 4 * 3600_000
    first = pipeline.services["processor"]
    with second_processor(pipeline, pipeline_env) as second:
        background, rest = _batches(reg, t0)

        def shared() -> int:
            return sum(p.counters().get("context_sent", 0) for p in (first, second))

        before = shared()
        publish_batches(publisher, background)
        # The background's signals reach the site's worker before the site reports (a
        # rule reads the newest background value at or before its own reading).
        wait_for(lambda: shared() >= before + 59, timeout=60,
                 what="the background's signals shared")
        time.sleep(3)
        publish_batches(publisher, rest)
        want_facility, want_district = _reference(reg, background + rest)
        ids = {b.facility_id for b in background + rest}
        end = t0 + 3 * 3600_000

        def mine(a: dict[str, Any]) -> bool:
            """This test's alarms (the shared stack holds other tests' alarms of the same
            districts: their levels, their waterlogging)."""
            if not t0 <= datetime.fromisoformat(a["ts"]).timestamp() * 1000 <= end:
                return False
            if a["category"] == "district":
                return a["rule"] == "rainstorm" and a["district"] in DISTRICTS
            return (a["category"] == "facility" and a["facility_id"] in ids
                    and (a["metric"] == "rainfall" or a["rule"] == "excess-15min-count"))

        want = [json.loads(e.model_dump_json()) for e in want_facility + want_district]
        want_ids = {a["event_id"] for a in want if mine(a)}
        assert len({a["alarm_id"] for a in want if a["category"] == "district"
                    and mine(a)}) == 2  # the reference: one rainstorm per district

        def produced() -> list[dict[str, Any]]:
            return [a for a in topic_records(pipeline.stack, topics.ALARMS) if mine(a)]

        got = wait_for(lambda: (p := produced()) and want_ids <= {a["event_id"] for a in p}
                       and p, timeout=90, what="every facility and district alarm event")
        time.sleep(2)  # let anything extra arrive
        got = produced()
        rain = [a for a in got if a["category"] == "district"]
        for d in DISTRICTS:
            here = [a for a in rain if a["district"] == d]
            assert len({a["alarm_id"] for a in here}) == 1, here  # one per district …
            assert here[-1]["level"] == "red"
        gauges = [a for a in got if a["metric"] == "rainfall"]
        assert gauges and {a["grouped_into"] for a in gauges} == {"rainstorm"}  # … not paged
        [excess] = [a for a in got if a["rule"] == "excess-15min-count"]
        assert excess["level"] == "yellow" and excess["value"] == 3
        # The same events as one engine in process (duplicates are allowed: at least once).
        assert {a["event_id"] for a in got} == want_ids
        # Both workers evaluated readings; the districts were folded by the context's owners.
        assert first.counters().get("processed_batches", 0) > 0
        assert second.counters().get("processed_batches", 0) > 0
        assert sum(p.counters().get("district_events", 0) for p in (first, second)) >= \
            len(want_district)

