"""Signed acknowledgements: every field covered, forged records ignored on the agent path
(Faust's test_context, no broker), and bad records never stop the agent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from unittest.mock import patch

import pytest
from faust.topics import Topic

from schemas.oncall import AckAction, AckRequest, OnCallRecord, RecordType
from services.core import topics
from services.notifier import handlers as notifier_app
from services.notifier.acks import AckSigner, canonical, derive_key
from tests.support.oncall_helpers import LINK_SECRET, alarm, build_notifier, put_on

SIGNER = AckSigner(LINK_SECRET)
TS = datetime(2026, 7, 1, 2, 3, 4, 567_891, tzinfo=UTC)


def ack(**kw: Any) -> AckRequest:
    data: dict[str, Any] = {
        "alarm_id": alarm().alarm_id, "facility_id": "F-1", "action": "acknowledge",
        "by": "bob", "comment": "on my way 正在处理", "via": "link", "token_id": "tok-1",
        "addressee": "ann", "second_factor": "sms", "ts": TS, **kw}
    return AckRequest.model_validate(data)


# Another valid value for every field but the signature.
TAMPER: dict[str, Any] = {
    "alarm_id": "another-alarm", "facility_id": "F-2", "action": AckAction.RESOLVE,
    "by": "mallory", "comment": "nothing to see", "via": "cli", "token_id": "tok-2",
    "addressee": "bob", "second_factor": None, "ts": datetime(2026, 7, 1, 2, 3, 5, tzinfo=UTC)}


def test_every_field_but_the_signature_is_tampered_in_the_test() -> None:
    assert set(TAMPER) == set(AckRequest.model_fields) - {"signature"}


def test_a_signed_ack_verifies_and_survives_the_trip_through_kafka() -> None:
    signed = SIGNER.sign(ack())
    assert signed.signature and signed.signature.startswith("v1=")
    assert SIGNER.problem(signed) is None
    back = AckRequest.model_validate_json(signed.model_dump_json())  # ms timestamps
    assert SIGNER.problem(back) is None
    assert back.ts == datetime(2026, 7, 1, 2, 3, 4, 567_000, tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampering_with_any_field_breaks_the_signature(name: str) -> None:
    signed = SIGNER.sign(ack())
    altered = AckRequest.model_validate({**signed.model_dump(), name: TAMPER[name]})
    assert getattr(altered, name) != getattr(signed, name)
    assert SIGNER.problem(altered) == ("acknowledgement signature does not verify (forged or "
                                       "altered)")
    # … also on the wire: the field edited in the JSON the notifier reads.
    raw = json.loads(signed.model_dump_json())
    raw[name] = json.loads(altered.model_dump_json())[name]
    assert SIGNER.problem(AckRequest.model_validate_json(json.dumps(raw))) is not None


def test_unsigned_foreign_and_unknown_scheme_acks_are_refused() -> None:
    assert SIGNER.problem(ack()) == "unsigned acknowledgement"
    other = AckSigner("another-notifier-secret-0123456789").sign(ack())
    assert SIGNER.problem(other) is not None
    assert SIGNER.problem(ack(signature="v2=" + "0" * 64)) == (
        "acknowledgement signed with an unknown scheme")
    good = SIGNER.sign(ack())
    assert good.signature is not None
    flipped = good.signature[:-1] + ("0" if good.signature[-1] != "0" else "1")
    assert SIGNER.problem(good.model_copy(update={"signature": flipped})) is not None


def test_the_signing_key_is_derived_and_is_not_the_link_secret() -> None:
    key = derive_key(LINK_SECRET)
    assert len(key) == 32 and LINK_SECRET.encode() not in key
    assert derive_key(LINK_SECRET) == key != derive_key(LINK_SECRET + "x")
    with pytest.raises(ValueError, match="16 characters"):
        AckSigner("short")
    text = canonical(ack())
    assert text.startswith(b"lifeline-ack-v1\n") and b"signature" not in text
    assert json.loads(text.split(b"\n", 1)[1])["second_factor"] == "sms"


async def test_cli_acknowledgements_are_signed_with_a_fresh_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from services.core.settings import KafkaSettings
    from services.notifier import tools

    sent: list[bytes] = []

    class Producer:
        def __init__(self, **_kw: Any) -> None: ...
        async def start(self) -> None: ...
        async def stop(self) -> None: ...

        async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
            assert topic == topics.ACKS and key == b"F-1"
            sent.append(value)

    monkeypatch.setattr(tools, "AIOKafkaProducer", Producer)
    monkeypatch.setenv("LIFELINE_STATE_DIR", "/nonexistent-lifeline-state")
    monkeypatch.setenv("LIFELINE_NOTIFIER_LINK_SECRET", LINK_SECRET)
    kafka = KafkaSettings()
    for _ in range(2):
        await tools.send_ack(kafka, "a-1", "F-1", "chief", "cli", AckAction.ACKNOWLEDGE)
    reqs = [AckRequest.model_validate_json(v) for v in sent]
    assert all(SIGNER.problem(r) is None and r.via == "cli" for r in reqs)
    assert reqs[0].token_id != reqs[1].token_id  # a replayed record is refused by its id
    monkeypatch.setenv("LIFELINE_NOTIFIER_LINK_SECRET", "")
    with pytest.raises(SystemExit, match="LINK_SECRET"):
        await tools.send_ack(kafka, "a-1", "F-1", "chief", "", AckAction.ACKNOWLEDGE)


# ------------------------------------------------------------------------ the agent


async def test_forged_acks_change_nothing_and_genuine_ones_apply(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    n = build_notifier(monkeypatch, tmp_path)
    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def _keep(self, event: str, **kw: Any) -> None:
            logged.append((event, kw))

        info = warning = error = _keep

    monkeypatch.setattr(notifier_app, "log", Log())
    records: list[OnCallRecord] = []

    async def audit(topic: Any, *, key: bytes, value: bytes, **_kw: Any) -> None:
        if topic.get_topic_name() == topics.ONCALL:
            records.append(OnCallRecord.model_validate_json(value))

    ev = alarm(started=datetime.now(UTC))
    genuine = SIGNER.sign(AckRequest(alarm_id=ev.alarm_id, facility_id="F-1", by="ann",
                                     comment="real", via="cli", token_id="cli-1",
                                     ts=datetime.now(UTC)))
    wire = json.loads(genuine.model_dump_json())
    forged = [
        AckRequest(alarm_id=ev.alarm_id, facility_id="F-1", by="mallory", via="link",
                   ts=datetime.now(UTC)).model_dump_json().encode(),  # unsigned
        json.dumps({**wire, "by": "mallory"}).encode(),  # tampered
        AckSigner("another-notifier-secret-0123456789").sign(genuine).model_dump_json()
        .encode(),  # someone else's key
    ]
    with patch.object(Topic, "send", autospec=True, side_effect=audit):
        async with n.agent.test_context() as agent:
            await put_on(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 0)
            for i, raw in enumerate(forged):
                await put_on(agent, topics.ACKS, raw, b"F-1", 10 + i)
            episode = n.cache["F-1"].episodes[ev.alarm_id]
            assert episode.acked_by is None and episode.chains[0].next_at_ms is not None
            await put_on(agent, topics.ACKS, b"{not json", b"F-1", 20)  # rejected, not fatal
            await put_on(agent, topics.ACKS, genuine.model_dump_json().encode(), b"F-1", 21)
            await put_on(agent, topics.ACKS, genuine.model_dump_json().encode(), b"F-1", 22)
    counters = n.health.counters
    assert counters.get("acks_forged") == 3 and counters.get("rejected") == 1
    assert counters.get("acks") == 2
    ignored = [r for r in records if r.type is RecordType.IGNORED]
    assert [r.detail.split(":")[0] for r in ignored[:3]] == [
        "unsigned acknowledgement", "acknowledgement signature does not verify (forged or "
        "altered)", "acknowledgement signature does not verify (forged or altered)"]
    assert all(r.person is None for r in ignored[:3])  # nobody is named by a forgery
    assert "claims acknowledge by 'mallory' via link" in ignored[0].detail
    assert [r.detail.rsplit("; ", 1)[1].rstrip(")") for r in ignored[:3]] == [
        f"kafka:{topics.ACKS}[0]@{o}" for o in (10, 11, 12)]
    assert ignored[0].sensor == ev.sensor  # the episode is known here: the alarm's tags
    assert ignored[3].detail == "link already used"  # the genuine record, replayed
    acked = [r for r in records if r.type is RecordType.ACKNOWLEDGED]
    assert [(r.person, r.detail, r.channel) for r in acked] == [("ann", "real", "cli")]
    assert n.cache["F-1"].episodes[ev.alarm_id].acked_by == "ann"
    sources = [kw["source"] for e, kw in logged if e == "oncall.ack_forged"]
    assert sources == [f"kafka:{topics.ACKS}[0]@{o}" for o in (10, 11, 12)]
    assert any(e == "notifier.rejected" and kw["source"].endswith("@20") for e, kw in logged)


async def test_records_the_engine_cannot_handle_do_not_stop_the_agent(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    n = build_notifier(monkeypatch, tmp_path)
    ev = alarm(started=datetime.now(UTC))

    def broken(*_a: Any, **_kw: Any) -> Any:
        raise KeyError("district")

    async def audit(*_a: Any, **_kw: Any) -> None:
        return None

    with patch.object(Topic, "send", autospec=True, side_effect=audit), \
            patch.object(n.escalator, "on_alarm", side_effect=broken):
        async with n.agent.test_context() as agent:
            await put_on(agent, topics.ALARMS, ev.model_dump_json().encode(), b"F-1", 0)
            await put_on(agent, topics.ALARMS, b"\xff\xfe", b"F-1", 1)  # not even UTF-8
            await put_on(agent, topics.ONCALL, b'{"type": "nonsense"}', b"F-1", 2)
    assert n.health.counters.get("record_errors") == 1
    assert n.health.counters.get("rejected") == 2


def test_the_audit_record_says_how_the_acknowledgement_was_confirmed() -> None:
    from tests.support.oncall_helpers import T0, Run, ms

    r = Run()
    r.alarm(ms(T0))
    req = AckRequest(alarm_id=alarm().alarm_id, facility_id="F-1", by="bob", via="link",
                     token_id="t-1", addressee="ann", second_factor="sms", ts=T0)
    out = r.esc.on_ack(r.fs, req, ms(T0) + 1000)
    [rec] = [x for x in out.records if x.type is RecordType.ACKNOWLEDGED]
    assert (rec.person, rec.channel) == ("bob", "link+sms-code")
    assert r.fs.episodes[req.alarm_id].chains[0].next_at_ms is None  # the chain stopped
