"""docs/architecture.md matches the code: every topic of the table with its codec, every
service package, the service skeleton, and Faust's private attributes only behind the wall."""

from __future__ import annotations

import re
from pathlib import Path

from schemas import codec
from schemas.topics import TABLE

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text()
SERVICES = ("ingest", "processor", "writer", "notifier", "orders")


def _codec_name(value: object) -> str:
    return next(n for n, v in vars(codec).items() if v is value and n.isupper())


def test_every_topic_is_drawn_and_tabled_with_its_codec() -> None:
    diagram = DOC.split("```", 2)[1]
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `([a-z.]+)` \| [^|]*\(`([A-Z_]+)`\)", DOC, re.M)}
    for t in TABLE:
        assert t.name in diagram, f"{t.name} missing from the diagram"
        assert rows.get(t.name) == _codec_name(t.codec), t.name
    assert set(rows) == {t.name for t in TABLE}


def test_every_service_package_is_named() -> None:
    for pkg in (ROOT / "services").glob("*/__init__.py"):
        assert f"services/{pkg.parent.name}/" in DOC or pkg.parent.name in SERVICES, pkg


def test_every_service_has_the_skeleton() -> None:
    for name in SERVICES:
        files = {p.name for p in (ROOT / "services" / name).glob("*.py")}
        assert {"config.py", "app.py", "handlers.py", "errors.py"} <= files, (name, files)


def test_the_writer_reads_readings_with_a_plain_consumer_group() -> None:
    """The diagram says so; the code must too (services/writer: aiokafka, not an agent)."""
    assert "writer: readings (plain consumer" in DOC
    text = "".join(p.read_text() for p in (ROOT / "services" / "writer").glob("*.py"))
    assert "AIOKafkaConsumer(" in text and "subscribe([topics.READINGS]" in text
    assert not re.search(r"agent\(\s*readings", text)


PRIVATE = re.compile(r"getattr\(\s*app,\s*\"_|\.(_consumer|_committed_offset|_paused_partitions|"
                     r"_fetch_max_wait_ms|_enabled|_wait_next_records|_create_worker_consumer)\b")


def test_faust_private_attributes_only_behind_the_wall() -> None:
    wall = ROOT / "services" / "core" / "faust"
    stray = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "services").rglob("*.py")
             if not p.is_relative_to(wall)
             for i, line in enumerate(p.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert stray == []
