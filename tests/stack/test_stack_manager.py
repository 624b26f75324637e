"""The local stack manager's pure parts: dependency report, generated configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.stack import manager
from services.stack.manager import Ports, Stack, StackSettings


def test_missing_system_packages_are_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager.shutil, "which", lambda _name: None)
    monkeypatch.setattr(manager.os, "access", lambda _p, _m: False)
    missing = manager.check_dependencies()
    text = "\n".join(missing)
    assert "mosquitto not found (Debian package mosquitto)" in text
    assert "influxd not found (Debian package influxdb)" in text
    assert all("bootstrap.sh" in m for m in missing if "not found" in m)


@pytest.mark.parametrize(("name", "value"), [
    ("LIFELINE_STACK_PARTITIONS", "0"), ("LIFELINE_STACK_PARTITIONS", "-2"),
    ("LIFELINE_STACK_PARTITIONS", "four"), ("LIFELINE_STACK_MQTT_PORT", "0"),
    ("LIFELINE_STACK_KAFKA_PORT", "70000")])
def test_stack_settings_refuse_impossible_values(monkeypatch: pytest.MonkeyPatch, name: str,
                                                 value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("LIFELINE_STACK_").lower()):
        StackSettings()


def test_stack_settings_take_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_STACK_PARTITIONS", "2")
    monkeypatch.setenv("LIFELINE_STACK_MQTT_PORT", "21883")
    settings = StackSettings()
    assert (settings.partitions, settings.mqtt_port, settings.kafka_port) == (2, 21883, 19092)


def test_generated_configs_bind_loopback_and_keep_sessions(tmp_path: Path) -> None:
    stack = Stack(tmp_path, Ports(mqtt=1, kafka=2, influx=3, influx_rpc=4))
    conf = stack._mosquitto_conf().read_text()
    assert "listener 1 127.0.0.1" in conf and "allow_anonymous false" in conf
    assert "persistence true" in conf and "max_queued_messages 2000000" in conf
    acl = (tmp_path / "mosquitto" / "acl").read_text()
    assert "topic read lifeline/+/+/telemetry" in acl
    assert "pattern write lifeline/+/%u/telemetry" in acl
    influx = stack._influx_conf().read_text()
    assert 'bind-address = "127.0.0.1:3"' in influx and "reporting-disabled = true" in influx
    assert 'cache-snapshot-memory-size = "128m"' in influx  # issue 16: not the 25 MB default
    env = stack.env()
    assert env["LIFELINE_KAFKA_BOOTSTRAP"] == "127.0.0.1:2"
    assert env["LIFELINE_MQTT_PASSWORD"] != env["LIFELINE_SIMULATOR_MQTT_PASSWORD"]
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
