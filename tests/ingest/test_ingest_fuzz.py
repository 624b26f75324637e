"""A short run of the ingest fuzzer (tests/support/fuzz_ingest.py; the long run has 100,000), and
its hostile generators aimed at one field at a time: integers beyond Python's int-str
conversion limit and times at the edges of years 1 and 9999, on the fast and the strict
path."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.registry import Registry
from services.ingest.validate import Validator
from tests.support.fuzz_ingest import (
    FIELDS,
    GOOD_TOPIC,
    NOW,
    TIME_FIELDS,
    _mutate,
    _splice,
    check,
    edge_times,
    huge_ints,
    run,
)


def test_ingest_survives_hostile_payloads_and_topics() -> None:
    r = run(2000)
    assert r["examples"] == 2000
    assert len(r["outcomes"]) >= 5  # many kinds of refusal, each with its reason


def _validators(registry: Registry) -> list[Validator]:
    return [Validator(registry, max_payload_bytes=65536, max_future_s=300,
                      max_past_s=7 * 86400, fast=fast) for fast in (True, False)]


def test_huge_integers_are_refused_naming_their_field(registry: Registry) -> None:
    validators = _validators(registry)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(FIELDS), token=huge_ints)
    def prop(path: tuple[str, ...], token: str) -> None:
        payload = _splice(path, token)
        for v in validators:
            check(v, registry, GOOD_TOPIC, payload)  # never raises; every refusal a reason
            out = v.validate(GOOD_TOPIC, payload, NOW)
            dl = out.dead_letter
            assert dl is not None, (v.fast, path)
            assert dl.reason == "schema", (v.fast, path, dl.detail)
            assert ".".join(path) in dl.detail, (v.fast, path, dl.detail)
            assert "digits" in dl.detail
            if path[:2] == ("readings", "1"):  # the other reading survives
                assert out.batch is not None and len(out.batch.readings) == 1

    prop()


def test_times_at_the_edges_of_the_calendar_are_refused_with_a_reason(
        registry: Registry) -> None:
    fast, strict = _validators(registry)

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(TIME_FIELDS), when=edge_times)
    def prop(path: tuple[str, ...], when: str) -> None:
        payload = _mutate(path, when)
        outcomes = [v.validate(GOOD_TOPIC, payload, NOW) for v in (fast, strict)]
        assert outcomes[0].dead_letter == outcomes[1].dead_letter  # both paths agree
        check(fast, registry, GOOD_TOPIC, payload)
        dl = outcomes[0].dead_letter
        assert dl is not None, (path, when)
        assert dl.reason in ("schema", "timestamp_past", "timestamp_future"), dl
        # Unparseable: the field itself; a valid time out of the limits: the reading(s)
        # it dates (a report's time dates each of its readings).
        where = (".".join(path) if dl.reason == "schema"
                 else "readings." if path == ("ts",) else ".".join(path[:2]))
        assert where in dl.detail, (path, when, dl.detail)

    prop()


def test_the_two_examples_of_the_issue(registry: Registry) -> None:
    for v in _validators(registry):
        for when in ("0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-23:59"):
            dl = v.validate(GOOD_TOPIC, _mutate(("ts",), when), NOW).dead_letter
            assert dl is not None and dl.reason == "schema"
            assert dl.detail.startswith("ts: ") and "outside years 1-9999" in dl.detail
        for path in (("seq",), ("readings", "0", "value")):
            dl = v.validate(GOOD_TOPIC, _splice(path, "1" * 4301), NOW).dead_letter
            assert dl is not None and dl.reason == "schema"
            assert dl.detail.startswith(".".join(path) + ": an integer of 4301 digits")
