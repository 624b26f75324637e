"""An MQTT publisher with flow control (QoS 1, bounded number of unacknowledged messages)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from schemas.errors import LifelineError


class PublishError(LifelineError, RuntimeError):
    pass


class Publisher:
    def __init__(self, host: str, port: int, username: str, password: str, *,
                 client_id: str = "lifeline-simulator", max_outstanding: int = 2000,
                 qos: int = 1, ca_file: str | None = None,
                 protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311
                 ) -> None:
        self.qos = qos
        self._window = threading.BoundedSemaphore(max_outstanding)
        self._connected = threading.Event()
        self._answered = threading.Event()  # connected, refused, or the connection failed
        self.published = 0
        self.acked = 0
        self.refused = 0
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=None if protocol is MQTTProtocolVersion.MQTTv5 else True,
                        protocol=protocol)
        c.username_pw_set(username, password)
        if ca_file is not None:  # TLS, the broker's certificate verified against this CA
            c.tls_set(ca_certs=ca_file)
        c.max_inflight_messages_set(max_outstanding)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        # A failed TLS handshake (an untrusted broker certificate) or a refused connection:
        # the broker is up before a gateway's simulator starts, so this is an answer too.
        c.on_connect_fail = lambda *_a: self._answered.set()
        c.on_publish = self._on_publish
        self.client = c
        self._connect_reason: str | None = None
        c.connect_async(host, port, keepalive=30)
        c.loop_start()
        # A refusal (bad password, no ACL, wrong CA) ends the wait at once, not after 10 s.
        self._answered.wait(10)
        if not self._connected.is_set():
            c.loop_stop()
            raise PublishError(f"cannot connect to MQTT {host}:{port} as {username}: "
                               f"{self._connect_reason or 'timeout'}")

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode,
                    _p: object) -> None:
        self._connect_reason = str(reason)
        if not reason.is_failure:
            self._connected.set()
        self._answered.set()

    def _on_disconnect(self, *_a: object) -> None:
        self._connected.clear()
        self._answered.set()  # before a CONNACK: the broker closed the connection

    def _on_publish(self, _c: mqtt.Client, _u: object, _mid: int, reason: ReasonCode,
                    _p: object) -> None:
        self.acked += 1
        if reason.is_failure:
            self.refused += 1
        self._window.release()

    def publish(self, topic: str, payload: bytes) -> None:
        self._window.acquire()
        info = self.client.publish(topic, payload, qos=self.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            self._window.release()
            raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        self.published += 1

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every QoS 1 publish was acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        while self.acked < self.published and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acked >= self.published

    def close(self) -> None:
        self.flush(10)
        self.client.disconnect()
        self.client.loop_stop()
