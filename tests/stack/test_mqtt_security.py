"""MQTT access for real: accounts and ACLs generated from the registry, a gateway that
tries to publish as another facility, and TLS — a Mosquitto of this module's own with a
plain and a TLS listener, certificates made by openssl for the test."""

from __future__ import annotations

import csv
import os
import pwd
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from schemas.registry import load_registry
from services.core import topics
from services.stack.manager import Stack, find_binary, free_port
from services.stack.process import spawn, terminate
from services.stack.services import ServiceProcess
from simulators.publisher import Publisher, PublishError
from tests.support.paths import EXAMPLE_REGISTRY
from tests.support.stack_helpers import now_ms, report, topic_records, wait_for

# A Mosquitto of the module's own.
pytestmark = pytest.mark.integration

INGEST_PW = "ingest-password-0123456789"


@dataclass
class Broker:
    port: int
    tls_port: int
    ca: str
    other_ca: str
    creds: dict[str, str]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            f"/CN={name}", "-keyout", str(key), "-out", str(crt))
    return key, crt


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    d = tmp_path_factory.mktemp("mqtt-security")
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "mqtt", "accounts", "--out", str(d / "acc"),
         "--registry", str(EXAMPLE_REGISTRY)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "MQTT_INGEST_PASSWORD": INGEST_PW}, check=True)
    gateways = len(load_registry(EXAMPLE_REGISTRY).facilities)  # one account each
    assert f'"gateways": {gateways}' in out.stdout
    with (d / "acc" / "gateways.csv").open(newline="") as fh:
        creds = {r["username"]: r["password"] for r in csv.DictReader(fh)}
    assert oct((d / "acc" / "gateways.csv").stat().st_mode)[-3:] == "600"
    ca_key, ca = make_ca(d, "lifeline-test-ca")
    _, other_ca = make_ca(d, "some-other-ca")
    key, csr, crt = d / "server.key", d / "server.csr", d / "server.crt"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
            str(key), "-out", str(csr))
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "1", "-extfile", str(d / "ext"), "-out", str(crt))
    port, tls_port = free_port(), free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"  # reads our 0600 files
        "per_listener_settings false\nallow_anonymous false\n"
        f"password_file {d / 'acc' / 'passwd'}\nacl_file {d / 'acc' / 'acl'}\n"
        f"listener {port} 127.0.0.1\n"
        f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {crt}\nkeyfile {key}\n"
        "tls_version tlsv1.2\n")
    proc = spawn([find_binary("mosquitto"), "-c", str(conf)], log=d / "mosquitto.log")
    wait_for(lambda: _tcp(port) and _tcp(tls_port), 10, what="mosquitto up")
    yield Broker(port, tls_port, str(ca), str(other_ca), creds)
    terminate(proc.pid)


def _tcp(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Listener:
    """Ingest's account, subscribed to all telemetry: what the broker really delivers."""

    def __init__(self, port: int) -> None:
        self.got: list[str] = []
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{port}")
        c.username_pw_set("lifeline-ingest", INGEST_PW)
        c.on_connect = lambda cl, *_a: (cl.subscribe("lifeline/+/+/telemetry", qos=1),
                                        self.ready.set())
        c.on_message = lambda _c, _u, m: self.got.append(m.topic)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(10)
        time.sleep(0.3)  # the subscription is in place

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_gateway_publishes_its_own_topic_and_no_other(broker: Broker) -> None:
    listen = Listener(broker.port)
    try:
        own, other = ("lifeline/drainage/DR-BH-001/telemetry",
                      "lifeline/drainage/DR-BH-002/telemetry")
        gw = Publisher("127.0.0.1", broker.port, "DR-BH-001", broker.creds["DR-BH-001"],
                       client_id="gw-311")
        payload = report(1, now_ms(), [("DR-BH-001-L1", "water_level", 1.0, "m")])
        gw.publish(own, payload)
        gw.publish(other, payload)  # pretending to be another facility
        gw.publish("lifeline/bridge/DR-BH-001/telemetry", payload)  # or another kind
        assert gw.flush(10)
        # MQTT 3.1.1: every PUBACK says success; the broker silently drops the denied ones.
        assert gw.refused == 0
        gw.close()
        v5 = Publisher("127.0.0.1", broker.port, "DR-BH-001", broker.creds["DR-BH-001"],
                       client_id="gw-5", protocol=MQTTProtocolVersion.MQTTv5)
        v5.publish(other, payload)
        assert v5.flush(10)
        assert v5.refused == 1  # MQTT 5: PUBACK reason 135, not authorized
        v5.close()
        time.sleep(0.5)
        assert listen.got == [own]
    finally:
        listen.close()


def test_wrong_password_and_unknown_gateway_are_refused(broker: Broker) -> None:
    with pytest.raises(PublishError, match=r"[Nn]ot authori"):
        Publisher("127.0.0.1", broker.port, "DR-BH-001", "wrong", client_id="bad-pw")
    with pytest.raises(PublishError, match=r"[Nn]ot authori"):
        Publisher("127.0.0.1", broker.port, "NOT-A-GATEWAY", "x", client_id="unknown")


def test_tls_listener_verifies_the_certificate(broker: Broker) -> None:
    gw = Publisher("127.0.0.1", broker.tls_port, "DR-BH-001", broker.creds["DR-BH-001"],
                   client_id="gw-tls", ca_file=broker.ca)
    gw.publish("lifeline/drainage/DR-BH-001/telemetry", b"{}")
    assert gw.flush(10) and gw.refused == 0
    gw.close()
    with pytest.raises(PublishError):  # a broker certificate from a CA we do not trust
        Publisher("127.0.0.1", broker.tls_port, "DR-BH-001", broker.creds["DR-BH-001"],
                  client_id="gw-other-ca", ca_file=broker.other_ca)
    with pytest.raises(PublishError):  # plain MQTT to the TLS port
        Publisher("127.0.0.1", broker.tls_port, "DR-BH-001", broker.creds["DR-BH-001"],
                  client_id="gw-plain")


def test_ingest_over_tls_end_to_end(broker: Broker, stack: Stack, tmp_path: Path) -> None:
    env = {**stack.env(), "LIFELINE_REGISTRY": str(EXAMPLE_REGISTRY),
           "LIFELINE_MQTT_PORT": str(broker.tls_port), "LIFELINE_MQTT_TLS": "true",
           "LIFELINE_MQTT_CA_FILE": broker.ca, "LIFELINE_MQTT_PASSWORD": INGEST_PW,
           "LIFELINE_INGEST_CLIENT_ID": "lifeline-ingest-tls-test"}
    ingest = ServiceProcess("ingest", env, tmp_path, free_port(), instance="-tls")
    ingest.start()
    try:
        wait_for(lambda: ingest.health()[0] == 200, 30, what="ingest connected over TLS")
        gw = Publisher("127.0.0.1", broker.tls_port, "SQ-BH-001", broker.creds["SQ-BH-001"],
                       client_id="gw-tls-e2e", ca_file=broker.ca)
        gw.publish("lifeline/sewage/SQ-BH-001/telemetry",
                   report(424242, now_ms() - 60_000, [("SQ-BH-001-Q1", "flow", 321.0, "L/s")]))
        assert gw.flush(10)
        gw.close()
        wait_for(lambda: [r for r in topic_records(stack, topics.READINGS)
                          if r["facility_id"] == "SQ-BH-001" and r["seq"] == 424242],
                 30, what="the TLS report in Kafka")
    finally:
        ingest.stop()
