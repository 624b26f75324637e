"""``lifeline dlq replay`` (services/core/dlq.py): which dead letters it selects, that it
sends them through ingest's own validation, produces what passes exactly as ingest does,
reports what does not, and gives the same result when run twice — with a stand-in
producer, and the command line with a stand-in for the Kafka part."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas.deadletter import DeadLetter, Problem, RejectReason, dead_letter
from schemas.reading import ReadingBatch
from schemas.registry import Registry
from services.core import dlq, topics
from services.core.dlq import ReplayReport, Selection, parse_instant, replay
from services.ingest.validate import Validator

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE = NOW - timedelta(hours=1)


def topic(fid: str) -> str:
    return f"lifeline/drainage/{fid}/telemetry"


def report(fid: str, seq: int, when: datetime, sensor: str = "L1") -> bytes:
    return json.dumps({"ts": when.isoformat(), "seq": seq, "readings": [
        {"sensor": f"{fid}-{sensor}", "metric": "water_level", "value": 1.5, "unit": "m"}]}
        ).encode()


def letter(payload: bytes, *, fid: str = "DR-BH-001", reason: RejectReason =
           RejectReason.RATE_LIMITED, at: datetime = NOW - timedelta(minutes=10),
           source: str | None = None, keep: int = 65536) -> bytes:
    dl = dead_letter(problems=[Problem(reason=reason, detail="test")], service="ingest",
                     source=source or f"mqtt:{topic(fid)}", payload=payload, received_at=at,
                     keep_bytes=keep, facility_id=fid)
    return dl.model_dump_json().encode()


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value, key))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


@pytest.fixture
def validator(registry: Registry) -> Validator:
    return Validator(registry, max_payload_bytes=65536, max_future_s=300,
                     max_past_s=7 * 86400)


def dlq_topic() -> tuple[list[bytes], dict[str, bytes]]:
    """A DLQ with every kind of record the selection must tell apart."""
    ev = NOW - timedelta(days=1)
    p = {"a1": report("DR-BH-001", 1, ev), "a2": report("DR-BH-001", 2, ev + timedelta(minutes=1)),
         "b1": report("DR-BH-002", 1, ev), "old": report("DR-BH-001", 3, NOW - timedelta(days=30)),
         "bad": report("DR-BH-001", 4, ev, sensor="ZZ"), "qos0": report("DR-BH-001", 5, ev),
         "early": report("DR-BH-001", 6, ev), "big": report("DR-BH-001", 7, ev) + b" " * 500}
    values = [
        letter(p["a1"]), letter(p["a2"]), letter(p["a1"]),              # a repeat of a1
        letter(p["b1"], fid="DR-BH-002"),                                # another facility
        letter(p["old"]),                                                # too old by now
        letter(p["bad"]),                                                # unknown sensor
        letter(p["qos0"], reason=RejectReason.QOS0),                     # another reason
        letter(p["early"], at=SINCE - timedelta(minutes=1)),             # before --since
        letter(p["big"], keep=100),                                      # truncated
        letter(p["a1"], source="lifeline.readings[0]@17"),               # not from MQTT
        b"not a dead letter",
    ]
    return values, p


async def test_selected_letters_go_through_ingest_validation(validator: Validator) -> None:
    values, p = dlq_topic()
    producer = Producer()
    refused: list[dict[str, Any]] = []
    r = await replay(values, Selection(RejectReason.RATE_LIMITED, SINCE), validator, producer,
                     on_refused=refused.append)
    assert r.read == 11 and r.undecodable == 1
    assert r.selected == 8  # a1, a2, a1 again, b1, old, bad, big, not-from-MQTT
    assert r.replayed == 3 and r.readings == 3  # a1, a2, b1
    assert r.still_refused == 2 and r.refused_reasons == {"timestamp_past": 1,
                                                          "unknown_sensor": 1}
    assert r.skipped_reasons == {"duplicate": 1, "truncated": 1, "not_from_mqtt": 1}
    assert {(x["was"], x["reason"]) for x in refused} == {("rate_limited", "timestamp_past"),
                                                         ("rate_limited", "unknown_sensor")}
    # Produced exactly as ingest produces a report: topic, key, value.
    assert [(t, k) for t, _v, k in producer.sent] == [
        (topics.READINGS, b"DR-BH-001"), (topics.READINGS, b"DR-BH-001"),
        (topics.READINGS, b"DR-BH-002")]
    for (_t, value, _k), name, fid in zip(producer.sent, ("a1", "a2", "b1"),
                                          ("DR-BH-001", "DR-BH-001", "DR-BH-002"), strict=True):
        got = ReadingBatch.model_validate_json(value)
        want = validator.validate(topic(fid), p[name], NOW).batch
        assert want is not None
        assert got.readings == want.readings and got.seq == want.seq  # original event time
        assert got.readings[0].ts == datetime.fromisoformat(json.loads(p[name])["ts"])


async def test_a_second_replay_produces_the_same_records(validator: Validator) -> None:
    values, _ = dlq_topic()
    runs = []
    for _ in range(2):
        producer = Producer()
        await replay(values, Selection(RejectReason.RATE_LIMITED, SINCE), validator, producer)
        runs.append([(k, ReadingBatch.model_validate_json(v).readings)
                     for _t, v, k in producer.sent])
    assert runs[0] == runs[1]  # same keys, readings and event times: points overwrite


async def test_filters_facility_until_and_dry_run(validator: Validator) -> None:
    values, _ = dlq_topic()
    only_b = Selection(RejectReason.RATE_LIMITED, SINCE, facility="DR-BH-002")
    producer = Producer()
    r = await replay(values, only_b, validator, producer)
    assert (r.selected, r.replayed, len(producer.sent)) == (1, 1, 1)
    none = Selection(RejectReason.RATE_LIMITED, SINCE, until=SINCE + timedelta(seconds=1))
    assert (await replay(values, none, validator, Producer())).selected == 0
    qos0 = await replay(values, Selection(RejectReason.QOS0, SINCE), validator, None)
    assert qos0.dry_run and (qos0.selected, qos0.replayed) == (1, 1)  # counted, not produced
    early = Selection(RejectReason.RATE_LIMITED, SINCE - timedelta(hours=1))
    assert (await replay(values, early, validator, None)).selected == 9


def test_a_letter_matches_any_of_its_problems() -> None:
    dl = DeadLetter.model_validate_json(letter(b"x"))
    dl = dl.model_copy(update={"problems": [
        Problem(reason=RejectReason.RATE_LIMITED, detail="x"),
        Problem(reason=RejectReason.UNKNOWN_SENSOR, detail="y", reading_index=1)]})
    assert Selection(RejectReason.UNKNOWN_SENSOR, SINCE).matches(dl)
    assert not Selection(RejectReason.BAD_UNIT, SINCE).matches(dl)


def test_instants_need_an_offset() -> None:
    assert parse_instant("2026-11-26T08:00:00+08:00") == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="offset"):
        parse_instant("2026-11-26T08:00:00")


def test_the_command_prints_one_summary_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cli import app

    seen: dict[str, Any] = {}

    async def fake(selection: Selection, *, dry_run: bool, idle_s: float,
                   on_refused: Any = None) -> ReplayReport:
        seen.update(selection=selection, dry_run=dry_run, idle=idle_s)
        on_refused({"reason": "timestamp_past"})
        return ReplayReport(selected=3, replayed=2, still_refused=1, dry_run=dry_run)

    monkeypatch.setattr(dlq, "run_replay", fake)
    res = CliRunner().invoke(app, ["dlq", "replay", "--reason", "rate_limited", "--since",
                                   "2026-11-26T08:00:00+08:00", "--facility", "DR-BH-001",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert (summary["selected"], summary["replayed"], summary["still_refused"]) == (3, 2, 1)
    assert summary["dry_run"] is True
    sel = seen["selection"]
    assert sel.reason is RejectReason.RATE_LIMITED and sel.facility == "DR-BH-001"
    assert sel.since == datetime(2026, 11, 26, 0, 0, tzinfo=UTC) and sel.until is None
    bad = CliRunner().invoke(app, ["dlq", "replay", "--reason", "nope", "--since",
                                   "2026-11-26T08:00:00Z"])
    assert bad.exit_code == 1 and "unknown reason" in bad.output
    naive = CliRunner().invoke(app, ["dlq", "replay", "--reason", "qos0", "--since",
                                     "2026-11-26T08:00:00"])
    assert naive.exit_code == 1 and "offset" in naive.output
