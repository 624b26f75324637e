"""Producer batching and checkpoint pacing follow the broker flavour unless set."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.kafka import producer_kwargs
from services.core.settings import KafkaSettings
from services.processor.config import ProcessorSettings


@pytest.mark.parametrize(("flavor", "linger", "checkpoints"), [("tansu", 2, 150.0),
                                                                ("kafka", 20, 1000.0)])
def test_defaults_by_flavor(monkeypatch: pytest.MonkeyPatch, flavor: str, linger: int,
                            checkpoints: float) -> None:
    monkeypatch.delenv("LIFELINE_KAFKA_LINGER_MS", raising=False)
    monkeypatch.delenv("LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S", raising=False)
    kafka = KafkaSettings(flavor=flavor)
    kw = producer_kwargs(kafka, "x")
    assert kw["linger_ms"] == linger and kw["max_batch_size"] == 256 << 10
    assert ProcessorSettings().checkpoint_rate(flavor) == checkpoints


def test_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_KAFKA_LINGER_MS", "5")
    monkeypatch.setenv("LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S", "40")
    assert producer_kwargs(KafkaSettings(), "x")["linger_ms"] == 5
    assert ProcessorSettings().checkpoint_rate("tansu") == 40.0
    monkeypatch.setenv("LIFELINE_KAFKA_LINGER_MS", "5000")
    with pytest.raises(ValueError, match="linger_ms"):
        KafkaSettings()


# --------------------------------------------------------------------------- security
PASSWORD = "kafka-ingest-0123456789abcdef"


def _sasl_ssl(**extra: object) -> KafkaSettings:
    import certifi

    return KafkaSettings(flavor="kafka", bootstrap="kafka:9092", security_protocol="SASL_SSL",
                         sasl_username="lifeline-ingest", sasl_password=PASSWORD,
                         ca_file=certifi.where(), **extra)


def test_sasl_ssl_for_aiokafka_clients_and_faust_apps_alike() -> None:
    import ssl

    from faust.auth import SASLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from services.core.kafka import faust_kwargs, security_kwargs

    kafka = _sasl_ssl()
    kw = security_kwargs(kafka)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "lifeline-ingest" and kw["sasl_plain_password"] == PASSWORD
    ctx = kw["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    creds = faust_kwargs(kafka)["broker_credentials"]
    assert isinstance(creds, SASLCredentials)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"
    assert PASSWORD not in repr(creds)
    # What Faust hands each of its consumers, producers and admin client:
    faust = dict(credentials_to_aiokafka_auth(creds))
    assert faust.keys() == kw.keys()
    assert {k: v for k, v in faust.items() if k != "ssl_context"} == \
        {k: v for k, v in kw.items() if k != "ssl_context"}
    assert PASSWORD not in repr(kafka) and PASSWORD not in str(kafka)


def test_faust_app_gets_the_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from services.core.faust import app as faust_app

    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    app = faust_app.make_app("kafka-settings-test", _sasl_ssl(), web_port=18999)
    assert app.conf.broker_credentials.username == "lifeline-ingest"
    assert app.conf.broker_credentials.protocol.value == "SASL_SSL"


def test_local_broker_stays_plaintext() -> None:
    from services.core.kafka import faust_kwargs, security_kwargs

    kafka = KafkaSettings()  # Tansu on loopback
    assert security_kwargs(kafka) == {"security_protocol": "PLAINTEXT"}
    assert faust_kwargs(kafka)["broker_credentials"] is None


def test_mutual_tls_with_a_client_certificate(tmp_path: Path) -> None:
    import subprocess

    from faust.auth import SSLCredentials

    from services.core.kafka import faust_kwargs, security_kwargs

    key, cert = tmp_path / "client.key", tmp_path / "client.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=lifeline-writer", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    kafka = KafkaSettings(flavor="kafka", bootstrap="kafka:9093", security_protocol="SSL",
                          ca_file=cert, cert_file=cert, key_file=key)
    assert security_kwargs(kafka)["security_protocol"] == "SSL"
    assert isinstance(faust_kwargs(kafka)["broker_credentials"], SSLCredentials)
    sasl = _sasl_ssl(cert_file=cert, key_file=key)  # SCRAM and a client certificate
    assert security_kwargs(sasl)["ssl_context"] is not None


@pytest.mark.parametrize(("settings", "message"), [
    ({"security_protocol": "SASL_SSL", "sasl_username": "lifeline-ingest"},
     "LIFELINE_KAFKA_SASL_USERNAME and LIFELINE_KAFKA_SASL_PASSWORD are required"),
    ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password": PASSWORD,
      "sasl_mechanism": "PLAIN"}, "sends the password in the clear"),
    ({"security_protocol": "PLAINTEXT", "sasl_username": "u", "sasl_password": PASSWORD},
     "does not authenticate with them"),
    ({"security_protocol": "PLAINTEXT", "bootstrap": "kafka:9092"},
     "to a broker that is not on loopback sends every record unencrypted"),
    ({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": PASSWORD,
      "ca_file": "/nonexistent/ca.crt"}, "LIFELINE_KAFKA_CA_FILE: no such file"),
    ({"security_protocol": "SSL", "cert_file": "/etc/hostname"},
     "LIFELINE_KAFKA_CERT_FILE and LIFELINE_KAFKA_KEY_FILE go together"),
    ({"security_protocol": "PLAINTEXT", "ca_file": "/etc/hostname"},
     "LIFELINE_KAFKA_CA_FILE is set but"),
    ({"security_protocol": "SASL_SSL", "sasl_username": "u",
      "sasl_password": "CHANGE-ME-kafka-ingest"}, "a published example value"),
])
def test_incoherent_security_is_refused(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        KafkaSettings(flavor="kafka", **settings)
    assert PASSWORD not in str(info.value) and "CHANGE-ME-kafka" not in str(info.value)


def test_plaintext_to_a_test_broker_only_when_allowed() -> None:
    kafka = KafkaSettings(flavor="kafka", bootstrap="kafka-test:9092", allow_plaintext=True)
    assert kafka.security_protocol == "PLAINTEXT"
    assert KafkaSettings(bootstrap="127.0.0.1:9092,[::1]:9092,localhost:9092").bootstrap
