"""A short run of the ingest fuzzer (tests/fuzz_ingest.py; the long run has 100,000)."""

from __future__ import annotations

from tests.fuzz_ingest import run


def test_ingest_survives_hostile_payloads_and_topics() -> None:
    r = run(2000)
    assert r["examples"] == 2000
    assert len(r["outcomes"]) >= 5  # many kinds of refusal, each with its reason
