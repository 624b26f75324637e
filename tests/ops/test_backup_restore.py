"""Backup and restore for real (docs/operations.md): a running pipeline and notifier store
readings, raise two alarms and page for both; one is acknowledged. `lifeline backup create`
takes a backup; a second, fresh stack in another folder gets it with `lifeline backup
restore`. Then the readings and alarms are queryable in the new InfluxDB, the on-call
history shows the acknowledgement, and a notifier started on the restored stack carries on
from the restored on-call state: it escalates the unacknowledged alarm to its next step,
pages nobody twice and never pages the acknowledged alarm again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core import topics
from services.stack.manager import Ports, Stack, free_port
from services.stack.process import spawn
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher
from tests.support.pipeline import (
    TEST_FACILITIES,
    Pipeline,
    faust_ready,
    pipeline_env_of,
    running_pipeline,
    write_registry,
)
from tests.support.stack_helpers import (
    influx_count,
    influx_query,
    now_ms,
    report,
    topic_records,
    wait_for,
)

# Backup and restore of real services; some tests start their own processes, no fixture.
pytestmark = pytest.mark.integration

ACKED, OPEN = "DR-KJ-003", "DR-KG-003"  # example-registry manholes no other test uses
STEP_WAIT_S = 20.0  # long enough for the backup to come first, short for the restored one
WEBHOOK_SECRET = "backup-restore-webhook-secret-0123"
CHANGELOG = "lifeline-notifier-oncall_state-changelog"


def lifeline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env}, check=False)


def write_oncall(path: Path, receiver_port: int) -> None:
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    hook = {"id": "hook", "type": "webhook", "url": f"http://127.0.0.1:{receiver_port}/webhook",
            "secret_env": "TEST_WEBHOOK_SECRET", "personal": True}
    layer = [{"name": "l", "members": ["ann"], "handover": start, "shift_hours": 24}]
    doc = {"people": [{"id": p, "name": p.title()} for p in ("ann", "chief", "eve")],
           "channels": [hook],
           "teams": [{"id": "duty", "name": "Duty", "layers": layer, "escalation": [
                         {"notify": "on_duty", "channels": ["hook"], "wait_s": STEP_WAIT_S},
                         {"notify": "person:chief", "channels": ["hook"], "wait_s": 3600}]},
                     {"id": "rest", "name": "Rest", "layers": [{**layer[0], "members": ["eve"]}],
                      "escalation": [{"notify": "on_duty", "channels": ["hook"],
                                      "wait_s": 3600}]}],
           "routes": [{"match": {"facility": [ACKED, OPEN]}, "team": "duty"}, {"team": "rest"}],
           "grouping": {"window_s": 0}}
    path.write_text(yaml.safe_dump(doc))


class Receiver:
    def __init__(self, d: Path) -> None:
        self.out, port_file = d / "received.jsonl", d / "port"
        self.proc = spawn([sys.executable, "-m", "tests.support.receivers", "--out", str(self.out),
                           "--port-file", str(port_file), "--webhook-secret", WEBHOOK_SECRET],
                          log=d / "receiver.log", env=dict(os.environ))
        self.port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 20,
                                 what="receiver port"))

    def pages(self, facility: str, after: int = 0) -> list[str]:
        """Who was paged for ``facility``, in order (messages from index ``after`` on)."""
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [m["body"]["person"] for m in map(json.loads, lines[after:])
                if m["channel"] == "webhook"
                for a in m["body"]["alarms"] if a["facility_id"] == facility]

    def count(self) -> int:
        return len(self.out.read_text().splitlines()) if self.out.exists() else 0


# A stack and services of its own: the backup holds every topic, Faust changelogs included,
# and the notifier started here restores the group's escalation state — after the session's
# notifier tests (a storm of 500 alarms) that state kept it busy past this test's waits.
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("backup-stack"), Ports.free())
    s.up()
    yield s
    s.down()


@pytest.fixture(scope="module")
def registry_file(stack: Stack) -> Path:
    path = stack.state / "registry.yaml"
    write_registry(path, TEST_FACILITIES)
    return path


@pytest.fixture(scope="module")
def pipeline_env(stack: Stack, registry_file: Path) -> dict[str, str]:
    return pipeline_env_of(stack, registry_file)


@pytest.fixture(scope="module")
def pipeline(stack: Stack, pipeline_env: dict[str, str]) -> Iterator[Pipeline]:
    with running_pipeline(stack, pipeline_env) as p:
        yield p


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rx = Receiver(tmp_path)
    yield rx
    rx.proc.kill()
    rx.proc.wait(5)


def start_notifier(stack: Stack, env: dict[str, str], oncall: Path) -> ServiceProcess:
    public = free_port()
    svc = ServiceProcess("notifier", {
        **env, "LIFELINE_NOTIFIER_ONCALL": str(oncall),
        "LIFELINE_NOTIFIER_PUBLIC_PORT": str(public),
        "LIFELINE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{public}",
        "LIFELINE_NOTIFIER_TICK_INTERVAL_S": "0.5", "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET},
        stack.logs, free_port())
    svc.start()
    svc.wait_ready(90, ready=faust_ready)
    return svc


def raised(stack: Stack, facility: str) -> list[dict[str, Any]]:
    return [a for a in topic_records(stack, topics.ALARMS, idle=0.5)
            if a["facility_id"] == facility and a["event"] == "raised"]


def acked_in_changelog(stack: Stack, facility: str, alarm_id: str) -> bool:
    """The notifier's table (its changelog on Kafka) holds the acknowledgement."""
    async def read() -> list[bytes]:
        c = AIOKafkaConsumer(bootstrap_servers=f"127.0.0.1:{stack.ports.kafka}",
                             group_id=None, enable_auto_commit=False, fetch_max_wait_ms=100)
        await c.start()
        try:
            parts = c.partitions_for_topic(CHANGELOG) or set()
            tps = [TopicPartition(CHANGELOG, p) for p in parts]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            out: list[bytes] = []
            while batch := await c.getmany(timeout_ms=500):
                out.extend(r.value for recs in batch.values() for r in recs
                           if r.key and facility.encode() in r.key and r.value)
            return out
        finally:
            await c.stop()

    for raw in asyncio.run(read()):
        state = json.loads(raw)
        state = json.loads(state) if isinstance(state, str) else state
        ep = state.get("episodes", {}).get(alarm_id)
        if ep and ep.get("acked_by") == "ann":
            return True
    return False


def alarm_ids(stack: Stack, facility: str) -> set[str]:
    series = influx_query(stack, 'SELECT "alarm_id", "event" FROM "long"."alarm_event" WHERE '
                                 f"\"facility\" = '{facility}'")
    return {row[1] for s in series for row in s["values"]}


PHOTO = b"\x89PNG fake bytes of a site photo"


def put_order(stack: Stack) -> str:
    """A reported work order with a photo, straight into the stack's PostgreSQL."""
    from datetime import UTC, datetime, timedelta

    from schemas.kinds import AlarmLevel
    from schemas.workorder import OrderAction, OrderEvent, event_id_for, order_id_for
    from services.orders.store import Store

    oid = order_id_for("backup-alarm")
    t0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    steps: list[tuple[OrderAction, dict[str, Any]]] = [
        (OrderAction.OPEN, {"alarm_id": "backup-alarm", "facility_id": ACKED,
                            "level": AlarmLevel.ORANGE, "owner_unit": "unit",
                            "deadline": t0 + timedelta(hours=4)}),
        (OrderAction.DISPATCH, {"assignee": "ann"}), (OrderAction.ACCEPT, {}),
        (OrderAction.REPORT, {"note": "done", "evidence": ("UP-1",)})]

    async def run() -> None:
        store = Store(stack.env()["LIFELINE_POSTGRES_URL"])
        await store.connect()
        try:
            await store.add_upload("UP-1", oid, "image/png", 1, 1, "ann", PHOTO)
            for i, (action, fields) in enumerate(steps):
                at = t0 + timedelta(minutes=i)
                await store.apply(OrderEvent(event_id=event_id_for(oid, action, at, "ann"),
                                             order_id=oid, action=action, at=at, actor="ann",
                                             **fields), f"test:{i}")
        finally:
            await store.close()

    asyncio.run(run())
    return oid


def order_of(stack: Stack, oid: str) -> tuple[Any, list[Any], bytes | None]:
    from services.orders.store import Store

    async def run() -> tuple[Any, list[Any], bytes | None]:
        store = Store(stack.env()["LIFELINE_POSTGRES_URL"], create=False)
        await store.connect()
        try:
            up = await store.upload("UP-1")
            return (await store.order(oid), await store.history(oid),
                    bytes(up["data"]) if up else None)
        finally:
            await store.close()

    return asyncio.run(run())


def test_a_restore_brings_back_readings_alarms_and_oncall_state(
        pipeline: Pipeline, pipeline_env: dict[str, str], stack: Stack, publisher: Publisher,
        receiver: Receiver, tmp_path: Path) -> None:
    oncall = tmp_path / "oncall.yaml"
    write_oncall(oncall, receiver.port)
    env = {**pipeline_env, "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
    notifier = start_notifier(stack, env, oncall)
    try:
        # Two manholes over their blue level (two reports each: raise_after_count 2). The
        # acknowledged one first, so its next escalation step would come first too.
        t0 = now_ms() - 60_000
        for fid in (ACKED, OPEN):
            topic = f"lifeline/drainage/{fid}/telemetry"
            for seq, ts in ((1, t0), (2, t0 + 60_000)):
                publisher.publish(topic, report(seq, ts, [(f"{fid}-L1", "water_level", 2.0,
                                                           "m")]))
            wait_for(lambda f=fid: receiver.pages(f) == ["ann"], 30, what=f"{fid} paged")
        ack_id = raised(stack, ACKED)[0]["alarm_id"]
        open_id = raised(stack, OPEN)[0]["alarm_id"]
        done = lifeline(stack.env(), "oncall", "ack", ack_id, "--by", "ann", "--facility",
                        ACKED, "--comment", "pump started")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: acked_in_changelog(stack, ACKED, ack_id), 20,
                 what="the acknowledgement in the notifier's changelog")
        for fid in (ACKED, OPEN):
            wait_for(lambda f=fid: influx_count(stack, f"\"sensor\" = '{f}-L1' AND time >= {t0}ms") == 2, 20,
                     what=f"{fid} readings in InfluxDB")
        def acked_history() -> subprocess.CompletedProcess[str] | None:
            h = lifeline(stack.env(), "oncall", "history", ack_id)
            return h if h.returncode == 0 and "acknowledged" in h.stdout else None

        history = wait_for(acked_history, 20, what="the acknowledgement in the audit trail")
        assert receiver.pages(OPEN) == ["ann"]  # the backup comes before its next step

        order_id = put_order(stack)  # a work order with a photo (only PostgreSQL has it)
        backup = tmp_path / "backup"
        made = lifeline(stack.env(), "backup", "create", str(backup), "--registry",
                        pipeline_env["LIFELINE_REGISTRY"], "--oncall", str(oncall))
        assert made.returncode == 0, made.stderr
    finally:
        notifier.stop()
    summary = json.loads(made.stdout)
    assert summary["influxdb"] is True and summary["files"] == ["oncall", "registry"]
    assert summary["postgres"] is True
    manifest = json.loads((backup / "manifest.json").read_text())
    assert CHANGELOG in manifest["kafka"]["topics"]
    assert "lifeline-processor-alarm_state-changelog" in manifest["kafka"]["topics"]
    assert topics.TICKS not in manifest["kafka"]["topics"]
    assert "lifeline-notifier" in manifest["kafka"]["groups"]

    fresh = Stack(tmp_path / "restored", Ports.free())
    fresh.up()
    try:
        restored_oncall = tmp_path / "restored-oncall.yaml"
        restored_registry = tmp_path / "restored-registry.yaml"
        done = lifeline(fresh.env(), "backup", "restore", str(backup), "--write-oncall",
                        str(restored_oncall), "--write-registry", str(restored_registry))
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["records"] == sum(
            int(n) for t in manifest["kafka"]["topics"].values() for n in t["records"].values())
        assert restored_oncall.read_bytes() == oncall.read_bytes()
        assert restored_registry.read_bytes() == Path(
            pipeline_env["LIFELINE_REGISTRY"]).read_bytes()
        # Restoring twice is refused (the stores hold data now), in one line.
        again = lifeline(fresh.env(), "backup", "restore", str(backup))
        assert again.returncode == 1 and "already holds" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1

        # The work order, its history and its photo, in the new PostgreSQL.
        order, history_of, photo = order_of(fresh, order_id)
        assert order.state == "reported" and [e.action for e in history_of] == [
            "open", "dispatch", "accept", "report"]
        assert photo == PHOTO

        # Readings, alarms and the audit trail, queryable in the new InfluxDB.
        for fid in (ACKED, OPEN):
            assert influx_count(fresh, f"\"sensor\" = '{fid}-L1' AND time >= {t0}ms") == 2
        assert ack_id in alarm_ids(fresh, ACKED) and open_id in alarm_ids(fresh, OPEN)
        after = lifeline(fresh.env(), "oncall", "history", ack_id)
        assert history is not None and after.returncode == 0 and after.stdout == history.stdout

        # A notifier on the restored stack (same on-call file, same signing key: .env is
        # restored beside the backup) carries on from the restored on-call state.
        seen = receiver.count()
        fresh_env = {**fresh.env(), "LIFELINE_REGISTRY": str(restored_registry),
                     "LIFELINE_NOTIFIER_LINK_SECRET": stack.env()["LIFELINE_NOTIFIER_LINK_SECRET"],
                     "TEST_WEBHOOK_SECRET": WEBHOOK_SECRET}
        again_notifier = start_notifier(fresh, fresh_env, restored_oncall)
        try:
            wait_for(lambda: receiver.pages(OPEN, seen), STEP_WAIT_S + 60,
                     what="the unacknowledged alarm's next step on the restored stack")
            # Its step came after the acknowledged alarm's would have: that one stays quiet.
            assert receiver.pages(OPEN, seen) == ["chief"]
            assert receiver.pages(ACKED, seen) == []
        finally:
            again_notifier.stop()
    finally:
        fresh.down()


def test_backup_of_an_unreachable_stack_is_one_line(tmp_path: Path) -> None:
    env = {"LIFELINE_STATE_DIR": str(tmp_path / "none"),
           "LIFELINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    res = lifeline(env, "backup", "create", str(tmp_path / "b"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "backup failed: Kafka at" in res.stderr and "unreachable" in res.stderr
    assert not (tmp_path / "b").exists()


def test_restore_of_something_else_and_an_unreachable_influxdb_are_one_line(
        tmp_path: Path) -> None:
    from services.core.settings import InfluxSettings, KafkaSettings
    from services.ops.backup import BackupError, Stores, dump_influx

    env = {"LIFELINE_STATE_DIR": str(tmp_path / "none")}
    res = lifeline(env, "backup", "restore", str(tmp_path))
    assert res.returncode == 1
    assert res.stderr.strip() == (f"restore failed: {tmp_path}/manifest.json: not a Lifeline "
                                  "backup (FileNotFoundError)")
    port = free_port()
    stores = Stores(KafkaSettings(), InfluxSettings(url=f"http://127.0.0.1:{port}"),
                    f"127.0.0.1:{port}")
    with pytest.raises(BackupError, match=rf"^InfluxDB at http://127.0.0.1:{port} is "
                                          "unreachable: "):
        dump_influx(stores, tmp_path)
