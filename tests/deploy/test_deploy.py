"""Production deployment files, checked offline (no Docker engine, Kafka or cluster runs here):
docker-compose.yml against the compose-spec JSON Schema, the Kubernetes manifests against
the Kubernetes schemas, the promise that only configuration differs from the local stack,
and the trust boundaries: what is published, which secrets each service gets, Kafka's
listeners, principals and ACLs, InfluxDB's tokens, Mosquitto's accounts and listeners. The
brokers' entrypoints and set-up scripts run here with stand-ins for the tools they call."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

import certifi
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
CHECK_SECRET = str(ROOT / "deploy" / "check-secret.sh")
_VAR = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}|\$([A-Z0-9_]+)")
SERVICES = ("ingest", "processor", "writer", "notifier")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        got = env.get(name)
        if op and op.endswith("?") and not got:
            raise AssertionError(f"{name} is required: {arg}")
        if op and op.endswith("-") and not got:
            return arg
        return got or ""

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(ROOT / ".env.example").items()}


@pytest.fixture(scope="module")
def filled_env(example_env: dict[str, str]) -> dict[str, str]:
    """.env.example as an operator fills it in: every CHANGE-ME replaced by a random secret."""
    return {k: (secrets.token_urlsafe(24) if "CHANGE-ME" in v else v)
            for k, v in example_env.items()}


@pytest.fixture(scope="module")
def compose(filled_env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(interpolate(raw, filled_env))


def _executable(path: Path, body: str) -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _recorder(bin_: Path, log: Path, *names: str) -> None:
    """Stand-ins that append one line per call: the tool's name and its arguments,
    separated by the unit separator (arguments may contain spaces)."""
    for name in names:
        _executable(bin_ / name, f"#!/bin/bash\n(IFS=$'\\x1f'; echo \"{name}$IFS$*\") >> {log}\n")


def _calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [line.split("\x1f") for line in log.read_text().splitlines()]


# --------------------------------------------------------------------------- compose
def test_compose_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations
    schema_path = (Path(next(iter(spec.submodule_search_locations)))
                   / "builtin_schemas" / "vendor" / "compose-spec.json")
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(compose, schema)


def test_compose_needs_every_secret_from_the_env_file() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    with pytest.raises(AssertionError, match=r"is required: set \w+ in \.env"):
        interpolate(raw, {})
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = set(dotenv_values(ROOT / ".env.example"))
    assert used <= documented, f"variables missing from .env.example: {used - documented}"
    assert ".env\n" in (ROOT / ".gitignore").read_text()


def test_images_pinned_volumes_named_health_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        image = svc.get("image", "")
        assert re.search(r":\d+(\.\d+)+", image), f"{name}: image {image!r} is not pinned"
        if svc.get("restart") != "no":
            assert "healthcheck" in svc or name in SERVICES, name
    stateful = {"mosquitto": "/mosquitto/data", "kafka": "/var/lib/kafka/data",
                "influxdb": "/var/lib/influxdb2", "grafana": "/var/lib/grafana"}
    for name, path in stateful.items():
        mounts = services[name]["volumes"]
        assert any(m.split(":")[0] in compose["volumes"] and m.split(":")[1] == path
                   for m in mounts), f"{name} keeps {path} in a named volume"


def test_images_are_the_patched_releases(compose: dict[str, Any]) -> None:
    """eclipse-mosquitto 2.0.18 and grafana 11.6.1 have published CVEs; deploy/README.md
    says which releases replace them and why."""
    images = {s["image"].split(":")[0]: s["image"].split(":")[1]
              for s in compose["services"].values() if "image" in s}
    assert images["eclipse-mosquitto"] == "2.0.22"
    assert images["grafana/grafana"] == "12.4.11"
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "eclipse-mosquitto:2.0.22" in readme and "grafana/grafana:12.4.11" in readme


def test_processor_can_be_scaled(compose: dict[str, Any]) -> None:
    proc = compose["services"]["processor"]
    assert "container_name" not in proc and "ports" not in proc
    assert proc["command"] == ["processor"]


def test_compose_publishes_only_what_operators_need(compose: dict[str, Any]) -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    published: dict[str, set[int]] = {}
    for name, svc in raw["services"].items():
        for port in svc.get("ports", []):
            host, _host_port, container = str(port).rsplit(":", 2)
            # A configurable host address, loopback unless the operator says otherwise.
            assert re.fullmatch(r"\$\{(MQTT|LIFELINE)_PUBLISH_HOST:-127\.0\.0\.1\}", host), port
            published.setdefault(name, set()).add(int(container))
    assert published == {"mosquitto": {8883}, "grafana": {3000}, "notifier": {8081},
                         "orders": {8082}}  # the order page only
    # The notifier's published port is its acknowledgement page, not health and counters.
    env = dotenv_values(ROOT / "deploy" / "lifeline.production.env")
    assert env["LIFELINE_NOTIFIER_PUBLIC_PORT"] == "8081"
    assert env["LIFELINE_NOTIFIER_HEALTH_PORT"] == "8080"
    for svc in compose["services"].values():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:")  # the default


def _secret_vars(svc: dict[str, Any]) -> set[str]:
    return {k for k in svc.get("environment", {})
            if re.search(r"PASSWORD|TOKEN$|SECRET|_KEY$", k) and not k.endswith("_FILE")}


def test_each_service_gets_only_its_own_secrets(compose: dict[str, Any]) -> None:
    services = compose["services"]
    channels = {"LIFELINE_DINGTALK_TOKEN", "LIFELINE_DINGTALK_SECRET", "LIFELINE_WECOM_KEY",
                "LIFELINE_SMS_API_KEY", "LIFELINE_SMTP_PASSWORD", "LIFELINE_WEBHOOK_SECRET"}
    assert _secret_vars(services["ingest"]) == {"LIFELINE_KAFKA_SASL_PASSWORD",
                                                "LIFELINE_MQTT_PASSWORD"}
    assert _secret_vars(services["processor"]) == {"LIFELINE_KAFKA_SASL_PASSWORD"}
    assert _secret_vars(services["writer"]) == {"LIFELINE_KAFKA_SASL_PASSWORD"}
    assert _secret_vars(services["notifier"]) == {"LIFELINE_KAFKA_SASL_PASSWORD",
                                                  "LIFELINE_NOTIFIER_LINK_SECRET"} | channels
    # The orders service: its Kafka principal, its link secret, the channels it sends on;
    # its PostgreSQL password only inside its connection URL; Grafana the reader's password.
    assert _secret_vars(services["orders"]) == {"LIFELINE_KAFKA_SASL_PASSWORD",
                                                "LIFELINE_ORDERS_LINK_SECRET"} | channels
    assert "lifeline_orders:${POSTGRES_PASSWORD" in services["orders"]["environment"][
        "LIFELINE_POSTGRES_URL"] or "lifeline_orders:" in services["orders"]["environment"][
        "LIFELINE_POSTGRES_URL"]
    assert _secret_vars(services["grafana"]) >= {"POSTGRES_GRAFANA_PASSWORD"}
    # Each its own Kafka principal and password; the MQTT password only for ingest.
    users = [services[s]["environment"]["LIFELINE_KAFKA_SASL_USERNAME"] for s in SERVICES]
    assert users == [f"lifeline-{s}" for s in SERVICES]
    passwords = {services[s]["environment"]["LIFELINE_KAFKA_SASL_PASSWORD"] for s in SERVICES}
    assert len(passwords) == 4
    # InfluxDB: the admin token only where InfluxDB is set up; clients read their own token
    # from a volume nobody else mounts.
    text = (ROOT / "docker-compose.yml").read_text()
    raw = yaml.safe_load(text)
    admin_users = {n for n, s in raw["services"].items() if "${INFLUX_TOKEN:" in json.dumps(s)}
    assert admin_users == {"influxdb", "influxdb-tokens"}
    token_volumes: dict[str, set[str]] = {}
    for name, svc in services.items():
        for m in svc.get("volumes", []):
            if str(m).startswith("influx-token-"):
                token_volumes.setdefault(str(m).split(":")[0], set()).add(name)
    assert token_volumes == {"influx-token-writer": {"writer", "influxdb-tokens"},
                             "influx-token-notifier": {"notifier", "influxdb-tokens"},
                             "influx-token-grafana": {"grafana", "influxdb-tokens"},
                             "influx-token-orders": {"orders", "influxdb-tokens"}}
    for name in ("writer", "notifier"):
        assert services[name]["environment"]["LIFELINE_INFLUX_TOKEN_FILE"] == \
            "/run/lifeline/influx/token"
    assert "INFLUX_TOKEN" not in services["grafana"]["environment"]


def _production_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = {k: v or "" for k, v in dotenv_values(ROOT / "deploy" / "lifeline.production.env")
           .items()}
    env.update({k: str(v) for k, v in compose["services"][service]["environment"].items()})
    return env


@pytest.mark.parametrize("service", SERVICES)
def test_compose_selects_the_production_paths(compose: dict[str, Any], service: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    import ssl

    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from services.core.faust import app as faust_app
    from services.core.faust import fetch as faust_fetch
    from services.core.kafka import faust_kwargs, producer_kwargs, security_kwargs
    from services.core.settings import InfluxSettings, KafkaSettings, MqttSettings, load
    from services.writer.sinks import InfluxV2Sink, make_sink

    for key in [k for k in os.environ if k.startswith("LIFELINE_")]:
        monkeypatch.delenv(key)
    for key, value in _production_env(compose, service).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    # The CA the brokers' certificates chain to is mounted at /etc/lifeline/tls/ca.crt in the
    # containers; here any PEM bundle stands in for it.
    assert os.environ["LIFELINE_KAFKA_CA_FILE"] == "/etc/lifeline/tls/ca.crt"
    monkeypatch.setenv("LIFELINE_KAFKA_CA_FILE", certifi.where())
    if "LIFELINE_INFLUX_TOKEN_FILE" in os.environ:
        token = tmp_path / "token"
        token.write_text(secrets.token_urlsafe(32) + "\n")
        monkeypatch.setenv("LIFELINE_INFLUX_TOKEN_FILE", str(token))
    kafka = load(KafkaSettings)
    assert kafka.flavor == "kafka" and kafka.bootstrap == "kafka:9092"
    assert kafka.partitions == 12
    assert kafka.security_protocol == "SASL_SSL" and kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.sasl_username == f"lifeline-{service}"
    fk = faust_kwargs(kafka)
    # None of the Tansu workarounds is active against real Kafka.
    assert "producer_max_batch_size" not in fk and "broker_session_timeout" not in fk
    pk = producer_kwargs(kafka, "x")
    assert pk["enable_idempotence"] is True
    assert pk["linger_ms"] == 20  # Tansu's 100 ms is not used
    # Every client authenticates as the service over verified TLS: aiokafka's own clients
    # and Faust's (which turns broker_credentials into the same aiokafka options).
    assert pk["security_protocol"] == "SASL_SSL" and pk["sasl_plain_username"] == \
        f"lifeline-{service}"
    assert pk["ssl_context"].verify_mode == ssl.CERT_REQUIRED and pk["ssl_context"].check_hostname
    faust_auth = dict(credentials_to_aiokafka_auth(fk["broker_credentials"]))
    ours = security_kwargs(kafka)
    assert {k: v for k, v in faust_auth.items() if k != "ssl_context"} == \
        {k: v for k, v in ours.items() if k != "ssl_context"}
    assert faust_auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    if service == "processor":
        from services.processor.config import ProcessorSettings

        assert ProcessorSettings().checkpoint_rate(kafka.flavor) == 1000
    if service == "ingest":
        mqtt = load(MqttSettings)
        assert mqtt.tls and mqtt.port == 8883 and mqtt.host == "mosquitto"
    patched: list[bool] = []
    monkeypatch.setattr(faust_fetch, "short_fetch_wait_on_tansu", lambda: patched.append(True))
    app = faust_app.make_app(f"deploy-test-{service}", kafka, web_port=8080)
    assert patched == []
    assert app.conf.broker_credentials.protocol.value == "SASL_SSL"
    influx = load(InfluxSettings)
    assert isinstance(make_sink(influx), InfluxV2Sink)
    assert (influx.token is not None) == (service in ("writer", "notifier"))
    if service == "notifier":
        from schemas.oncall import load_oncall
        from services.notifier.config import NotifierSettings

        ns = NotifierSettings()
        assert ns.public_url.startswith("https://") and ns.health_port == 8080
        if "public_port" in NotifierSettings.model_fields:  # the page on a port of its own
            assert (ns.public_host, ns.public_port) == ("0.0.0.0", 8081)
        assert len(ns.link_secret.get_secret_value()) >= 16
        channel_vars = {c.token_env or "" for c in load_oncall(ROOT / ns.oncall).channels} | {
            c.secret_env or "" for c in load_oncall(ROOT / ns.oncall).channels}
        assert channel_vars - {""} <= set(compose["services"]["notifier"]["environment"])


@pytest.mark.parametrize("service", ["ingest", "writer"])
def test_the_example_values_do_not_start(example_env: dict[str, str], service: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    """.env.example copied without editing: the service refuses to start, naming the
    setting and not the value."""
    from services.core.settings import KafkaSettings, SettingsError, load

    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    example_compose = dict(interpolate(raw, example_env))
    for key in [k for k in os.environ if k.startswith("LIFELINE_")]:
        monkeypatch.delenv(key)
    for key, value in _production_env(example_compose, service).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_KAFKA_CA_FILE", certifi.where())
    with pytest.raises(SettingsError) as info:
        load(KafkaSettings)
    message = str(info.value.code)
    assert message.startswith("lifeline: refusing to start: LIFELINE_KAFKA_SASL_PASSWORD: ")
    assert "CHANGE-ME" not in message and len(message.splitlines()) == 1


def test_dockerfile_installs_like_the_project() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    boot = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "FROM python:3.11-" in docker
    assert "pip install --no-cache-dir --disable-pip-version-check -c constraints.txt ." in docker
    assert "pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'" in boot
    assert "USER lifeline" in docker and "HEALTHCHECK" in docker
    for pkg in ("schemas", "services", "simulators"):
        assert f"COPY {pkg} ./{pkg}" in docker  # every package pyproject.toml installs


# --------------------------------------------------------------------------- kubernetes
def test_kubernetes_manifests_are_valid() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/lifeline.yaml").read_text())
            if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 4 and "ConfigMap" in kinds and "Job" in kinds
    for d in docs:
        kubernetes_validate.validate(d, "1.30.0", strict=True)
        if d["kind"] in ("Deployment", "Job"):
            pod = d["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            c = pod["containers"][0]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        if d["kind"] == "Deployment":
            name = d["metadata"]["name"]
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert c["readinessProbe"]["httpGet"]["path"] == "/health"
            # The shared configuration, and a Secret of the service's own.
            assert c["envFrom"] == [{"configMapRef": {"name": "lifeline-config"}},
                                    {"secretRef": {"name": f"lifeline-{name}-secrets"}}]
            assert {"name": "LIFELINE_KAFKA_SASL_USERNAME", "value": f"lifeline-{name}"} \
                in c["env"]
            assert {"name": "tls", "mountPath": "/etc/lifeline/tls", "readOnly": True} \
                in c["volumeMounts"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["LIFELINE_KAFKA_FLAVOR"] == "kafka" and config["LIFELINE_INFLUX_API"] == "v2"
    assert config["LIFELINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["LIFELINE_MQTT_TLS"] == "true" and config["LIFELINE_MQTT_PORT"] == "8883"
    assert not any("PASSWORD" in k or "TOKEN" in k or "SECRET" in k for k in config), \
        "secrets belong in a Secret"
    service = next(d for d in docs if d["kind"] == "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["ack"]
    assert config["LIFELINE_NOTIFIER_PUBLIC_PORT"] == "8081"
    job = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]
    assert job["containers"][0]["command"] == ["/bin/bash", "/etc/lifeline/kafka/init.sh"]
    assert job["containers"][0]["envFrom"] == [{"secretRef": {"name": "lifeline-kafka-admin"}}]


# --------------------------------------------------------------------------- kafka
def _kafka_entry(tmp_path: Path, password: str, *, certs: bool = True,
                 formatted: bool = False, extra: dict[str, str] | None = None,
                 ) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    bin_, certs_dir, conf, data = (tmp_path / d for d in ("bin", "certs", "conf", "data"))
    for d in (bin_, certs_dir, data):
        d.mkdir(parents=True, exist_ok=True)
    if certs:
        for f in ("ca.crt", "kafka.p12", "kafka.p12.pass"):
            (certs_dir / f).write_text("store-pass-0123456789" if f.endswith("pass") else "pem")
    if formatted:
        (data / "meta.properties").write_text("cluster.id=x\n")
    log = tmp_path / "calls"
    _executable(bin_ / "kafka-storage.sh", f"#!/bin/bash\nif [ \"$1\" = random-uuid ]; then "
                f"echo uuid-1; exit; fi\n(IFS=$'\\x1f'; echo \"kafka-storage.sh$IFS$*\") >> {log}\n")
    _recorder(bin_, log, "kafka-server-start.sh")
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy/kafka/entrypoint.sh")], capture_output=True, text=True,
        check=False, env={"PATH": "/usr/bin:/bin", "KAFKA_ADMIN_PASSWORD": password,
                          "KAFKA_BIN": str(bin_), "KAFKA_CERTS_DIR": str(certs_dir),
                          "KAFKA_CONF_DIR": str(conf), "KAFKA_DATA_DIR": str(data),
                          "LIFELINE_CHECK_SECRET": CHECK_SECRET, **(extra or {})})
    return proc, conf, log


def test_kafka_has_only_an_authenticated_tls_listener_for_clients(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(24)
    proc, conf, log = _kafka_entry(tmp_path, password)
    assert proc.returncode == 0, proc.stderr
    props = dict(line.split("=", 1) for line in (conf / "server.properties").read_text()
                 .splitlines() if "=" in line and not line.startswith("#"))
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    listeners = dict(item.split("://") for item in props["listeners"].split(","))
    assert protocols == {"CLIENT": "SASL_SSL", "CONTROLLER": "PLAINTEXT"}
    assert "PLAINTEXT" not in {protocols[n] for n in listeners if n != "CONTROLLER"}
    # The controller listener is internal: bound to the container's loopback, not published.
    assert listeners["CONTROLLER"] == "127.0.0.1:9093"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["advertised.listeners"] == "CLIENT://kafka:9092"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["inter.broker.listener.name"] == "CLIENT"
    assert props["authorizer.class.name"] == \
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:lifeline-admin;User:ANONYMOUS"
    assert props["auto.create.topics.enable"] == "false"
    assert props["ssl.truststore.type"] == "PEM"
    calls = _calls(log)
    fmt = next(c for c in calls if c[0] == "kafka-storage.sh")
    assert fmt[1] == "format" and \
        f"SCRAM-SHA-512=[name=lifeline-admin,password={password}]" in fmt
    assert calls[-1] == ["kafka-server-start.sh", str(conf / "server.properties")]
    assert (conf / "server.properties").stat().st_mode & 0o077 == 0
    # Formatted once: a restart keeps the storage (and the admin's credential).
    proc, conf, log = _kafka_entry(tmp_path / "again", password, formatted=True)
    assert proc.returncode == 0 and [c[0] for c in _calls(log)] == ["kafka-server-start.sh"]


def test_kafka_compose_service_has_no_published_port(compose: dict[str, Any]) -> None:
    assert "ports" not in compose["services"]["kafka"]
    assert "ports" not in compose["services"]["influxdb"]


@pytest.mark.parametrize(("password", "reason"), [
    ("CHANGE-ME-kafka-admin", "is a placeholder"),
    ("short-Secret1", "is shorter than 16 characters"),
    ('quote"in-the-password-0123', "may only contain"),
])
def test_kafka_refuses_a_bad_admin_password(tmp_path: Path, password: str, reason: str) -> None:
    proc, _, log = _kafka_entry(tmp_path, password)
    assert proc.returncode == 1 and not _calls(log)
    assert f"kafka: refusing to start: KAFKA_ADMIN_PASSWORD {reason}" in proc.stderr
    assert password not in proc.stderr


def test_kafka_refuses_to_start_without_certificates(tmp_path: Path) -> None:
    proc, _, log = _kafka_entry(tmp_path, secrets.token_urlsafe(24), certs=False)
    assert proc.returncode == 1 and "run deploy/make-certs.sh" in proc.stderr
    assert _calls(log) == []


# --------------------------------------------------------------------------- three brokers
THREE_BROKERS = ROOT / "deploy" / "compose" / "kafka-3-brokers.yml"
BOOTSTRAP_3 = "kafka:9092,kafka-2:9092,kafka-3:9092"


def compose_merge(base: Any, override: Any) -> Any:
    """`docker compose -f base -f override`: mappings merged key by key, the override's
    scalars win, volume/port lists joined (no duplicates)."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = compose_merge(base[k], v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(override, list):
        return base + [v for v in override if v not in base]
    return override


@pytest.fixture(scope="module")
def compose_3(filled_env: dict[str, str]) -> dict[str, Any]:
    env = {**filled_env, "KAFKA_CONTROLLER_PASSWORD": secrets.token_urlsafe(24)}
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    merged = compose_merge(base, yaml.safe_load(THREE_BROKERS.read_text()))
    return dict(interpolate(merged, env))


def test_three_broker_compose_matches_the_spec_and_replicates_three_times(
        compose_3: dict[str, Any]) -> None:
    """Decision 0011: production Kafka keeps every record on three brokers and acknowledges
    it once two have it; the override gives exactly that to the brokers, the topic set-up
    and every service."""
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None and spec.submodule_search_locations
    schema = json.loads((Path(next(iter(spec.submodule_search_locations)))
                         / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())
    jsonschema.validate(compose_3, schema)
    jsonschema.validate(yaml.safe_load(THREE_BROKERS.read_text()), schema)
    services = compose_3["services"]
    brokers = {n: services[n] for n in ("kafka", "kafka-2", "kafka-3")}
    voters = {b["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers.values()}
    assert voters == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({b["environment"]["KAFKA_CLUSTER_ID"] for b in brokers.values()}) == 1
    for i, (name, b) in enumerate(brokers.items(), start=1):
        env = b["environment"]
        assert (env["KAFKA_NODE_ID"], env["KAFKA_ADVERTISED_HOST"]) == (str(i), name)
        assert (env["KAFKA_REPLICATION"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
        data = [m for m in b["volumes"] if m.endswith(":/var/lib/kafka/data")]
        assert len(data) == 1 and data[0].split(":")[0] in compose_3["volumes"]
        assert "ports" not in b and b["image"] == services["kafka"]["image"]
        assert "healthcheck" in b
    assert len({b["volumes"][-1] for b in brokers.values()}) == 3  # a volume each
    init = services["kafka-init"]
    assert init["environment"]["KAFKA_BOOTSTRAP"] == BOOTSTRAP_3
    assert (init["environment"]["KAFKA_REPLICATION"],
            init["environment"]["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert set(init["depends_on"]) == {"kafka", "kafka-2", "kafka-3"}
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["LIFELINE_KAFKA_BOOTSTRAP"] == BOOTSTRAP_3
        assert env["LIFELINE_KAFKA_REPLICATION"] == "3"
    # The single-node file stays as it is beside it.
    single = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "kafka-2" not in single


@pytest.mark.parametrize("service", SERVICES)
def test_three_broker_settings_instantiate(compose_3: dict[str, Any], service: str,
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    from services.core.kafka import faust_kwargs
    from services.core.settings import KafkaSettings, load

    for key in [k for k in os.environ if k.startswith("LIFELINE_")]:
        monkeypatch.delenv(key)
    for key, value in _production_env(compose_3, service).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LIFELINE_KAFKA_CA_FILE", certifi.where())
    kafka = load(KafkaSettings)
    assert kafka.bootstrap == BOOTSTRAP_3 and kafka.replication == 3
    assert faust_kwargs(kafka)["topic_replication_factor"] == 3  # Faust's changelogs too


def test_three_brokers_run_an_authenticated_controller_quorum(tmp_path: Path) -> None:
    password, controller = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    multi = {"KAFKA_NODE_ID": "2", "KAFKA_ADVERTISED_HOST": "kafka-2",
             "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093",
             "KAFKA_CLUSTER_ID": "bGlmZWxpbmUta2Fma2EtMQ", "KAFKA_REPLICATION": "3",
             "KAFKA_MIN_INSYNC_REPLICAS": "2", "KAFKA_CONTROLLER_PASSWORD": controller}
    proc, conf, log = _kafka_entry(tmp_path, password, extra=multi)
    assert proc.returncode == 0, proc.stderr
    props = dict(line.split("=", 1) for line in (conf / "server.properties").read_text()
                 .splitlines() if "=" in line and not line.startswith("#"))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == multi["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert props["listeners"] == "CLIENT://:9092,CONTROLLER://:9093"
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,CONTROLLER:SASL_SSL"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert f'password="{controller}"' in props["listener.name.controller.plain.sasl.jaas.config"]
    assert props["super.users"] == "User:lifeline-admin;User:controller"  # no ANONYMOUS
    assert props["advertised.listeners"] == "CLIENT://kafka-2:9092"
    for key, value in (("default.replication.factor", "3"), ("min.insync.replicas", "2"),
                       ("offsets.topic.replication.factor", "3"),
                       ("transaction.state.log.replication.factor", "3"),
                       ("transaction.state.log.min.isr", "2")):
        assert props[key] == value, key
    fmt = next(c for c in _calls(log) if c[0] == "kafka-storage.sh")
    assert _opt(fmt, "--cluster-id") == "bGlmZWxpbmUta2Fma2EtMQ"  # the same on every node
    for missing, why in (("KAFKA_CONTROLLER_PASSWORD", "KAFKA_CONTROLLER_PASSWORD"),
                         ("KAFKA_CLUSTER_ID", "KAFKA_CLUSTER_ID is required")):
        env = {k: v for k, v in multi.items() if k != missing}
        bad, _, bad_log = _kafka_entry(tmp_path / missing, password, extra=env)
        assert bad.returncode == 1 and why in bad.stderr and not _calls(bad_log)


def test_kafka_init_sets_min_insync_replicas_on_every_topic(tmp_path: Path) -> None:
    from services.core import topics

    proc, calls = _run_kafka_init(tmp_path, KAFKA_MIN_INSYNC_REPLICAS="2", **_passwords())
    assert proc.returncode == 0, proc.stderr
    created = {_opt(c, "--topic"): c for c in calls if c[0] == "kafka-topics.sh"}
    assert set(created) == set(topics.ALL)
    for call in created.values():
        assert _opt(call, "--replication-factor") == "3"
        assert _opt(call, "--config") == "min.insync.replicas=2"


# What each service's code does with Kafka, and so all it may do (deploy/kafka/init.sh):
# ingest sends readings, dead letters and health; the processor reads readings, its ticks and
# the district context and sends alarms, ticks, context, dead letters (its refusals) and
# health; the writer reads readings, alarms, health and the on-call trail and dead-letters
# what InfluxDB refuses; the notifier reads alarms, acks, its trail and ticks and writes them.
# Every consumer dead-letters the records it cannot read (docs/decisions/0011).
W, R = "Write", "Read"
EXPECTED_TOPIC_ACLS = {
    "lifeline-ingest": {W: {"readings", "readings.dlq", "health"}, R: set()},
    "lifeline-processor": {W: {"alarms", "ticks", "context", "readings.dlq", "health"},
                           R: {"readings", "ticks", "context"}},
    "lifeline-writer": {W: {"readings.dlq", "health"},
                        R: {"readings", "alarms", "health", "oncall"}},
    "lifeline-notifier": {W: {"acks", "oncall", "oncall.ticks", "health", "readings.dlq"},
                          R: {"alarms", "acks", "oncall", "oncall.ticks"}},
    "lifeline-orders": {W: {"orders", "readings.dlq"}, R: {"alarms", "orders"}},
}


def _run_kafka_init(tmp_path: Path, **passwords: str) -> tuple[subprocess.CompletedProcess[str],
                                                                 list[list[str]]]:
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    _recorder(bin_, log, "kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh")
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BIN": str(bin_), "KAFKA_PARTITIONS": "12",
           "KAFKA_REPLICATION": "3", "KAFKA_CERTS_DIR": str(tmp_path),
           "LIFELINE_CHECK_SECRET": CHECK_SECRET, **passwords}
    proc = subprocess.run(["bash", str(ROOT / "deploy/kafka/init.sh")], capture_output=True,
                          text=True, check=False, env=env)
    return proc, _calls(log)


def _passwords() -> dict[str, str]:
    return {f"KAFKA_{s}_PASSWORD": secrets.token_urlsafe(24)
            for s in ("ADMIN", "INGEST", "PROCESSOR", "WRITER", "NOTIFIER", "ORDERS")}


def _opt(call: list[str], flag: str) -> str:
    return call[call.index(flag) + 1]


def test_kafka_init_creates_the_topics_principals_and_least_privilege_acls(
        tmp_path: Path) -> None:
    from services.core import topics
    from services.core.kafka import faust_kwargs
    from services.core.settings import KafkaSettings
    from services.writer.readings import consumer_kwargs

    pw = _passwords()
    proc, calls = _run_kafka_init(tmp_path, **pw)
    assert proc.returncode == 0, proc.stderr
    for call in calls:  # every call as the admin, over SASL_SSL
        assert _opt(call, "--bootstrap-server") == "kafka:9092"
        assert "--command-config" in call
    created = {_opt(c, "--topic"): c for c in calls if c[0] == "kafka-topics.sh"}
    assert set(created) == set(topics.ALL)
    assert all(_opt(c, "--partitions") == "12" and _opt(c, "--replication-factor") == "3"
               for c in created.values())
    users = {_opt(c, "--entity-name"): _opt(c, "--add-config")
             for c in calls if c[0] == "kafka-configs.sh"}
    assert users == {f"lifeline-{s}": f"SCRAM-SHA-512=[iterations=8192,"
                     f"password={pw[f'KAFKA_{s.upper()}_PASSWORD']}]"
                     for s in (*SERVICES, "orders")}

    acls: set[tuple[str, str, str, str, str]] = set()
    for c in calls:
        if c[0] != "kafka-acls.sh":
            continue
        assert "--add" in c and "--deny-principal" not in c
        kind = next(k for k in ("--topic", "--group", "--cluster", "--transactional-id")
                    if k in c)
        acls.add((_opt(c, "--allow-principal"), _opt(c, "--operation"), kind[2:],
                  _opt(c, kind), _opt(c, "--resource-pattern-type")))
    assert not [a for a in acls if a[2] not in ("topic", "group")], "no cluster-wide rights"
    assert not [a for a in acls if a[3] in ("*", "")], "no wildcard resource"
    assert not [a for a in acls if a[1] in ("All", "Alter", "AlterConfigs", "Delete",
                                            "ClusterAction")]
    literal = {a for a in acls if a[2] == "topic" and a[4] == "literal"}
    for principal, ops in EXPECTED_TOPIC_ACLS.items():
        for op in (W, R):
            got = {a[3] for a in literal if a[0] == f"User:{principal}" and a[1] == op}
            assert got == {f"lifeline.{t}" for t in ops[op]}, (principal, op)
    assert {a for a in literal if a[1] not in (W, R)} == set()
    writers = {t: {p for p, ops in EXPECTED_TOPIC_ACLS.items() if t in ops[W]}
               for t in ("readings", "alarms", "ticks", "context", "acks", "oncall",
                         "oncall.ticks")}
    assert writers == {"readings": {"lifeline-ingest"}, "alarms": {"lifeline-processor"},
                       "ticks": {"lifeline-processor"}, "context": {"lifeline-processor"},
                       "acks": {"lifeline-notifier"}, "oncall": {"lifeline-notifier"},
                       "oncall.ticks": {"lifeline-notifier"}}
    # Faust's own topics (table changelogs, the assignor's leader topic) are named after the
    # app (lifeline-<service>-…): each Faust service may create and use its prefix, no other.
    prefixed = {a for a in acls if a[4] == "prefixed"}
    for svc in ("processor", "writer", "notifier"):
        assert {(a[1], a[3]) for a in prefixed if a[0] == f"User:lifeline-{svc}"} == \
            {(op, f"lifeline-{svc}-") for op in ("Create", "Read", "Write", "Describe")}
    assert not [a for a in prefixed if a[0] == "User:lifeline-ingest"]
    # Consumer groups: each service its own (Faust's group is the app id; the writer's
    # readings consumer has its own group).
    kafka = KafkaSettings(flavor="kafka", allow_plaintext=True, bootstrap="kafka:9092")
    assert faust_kwargs(kafka)["broker"] == "kafka://kafka:9092"
    groups = {(a[0], a[3]) for a in acls if a[2] == "group"}
    from services.processor.district_desk import GROUP as DISTRICT_DESK

    assert groups == {("User:lifeline-processor", "lifeline-processor"),
                      ("User:lifeline-processor", DISTRICT_DESK),  # the district desk
                      ("User:lifeline-writer", "lifeline-writer"),
                      ("User:lifeline-writer", consumer_kwargs(kafka)["group_id"]),
                      ("User:lifeline-notifier", "lifeline-notifier"),
                      # the orders service's two plain consumer groups (services/orders/app.py)
                      ("User:lifeline-orders", "lifeline-orders-open"),
                      ("User:lifeline-orders", "lifeline-orders-store")}
    orders_app = (ROOT / "services" / "orders" / "app.py").read_text()
    assert '"lifeline-orders-open"' in orders_app and '"lifeline-orders-store"' in orders_app
    assert {a[1] for a in acls if a[2] == "group"} == {"Read"}


def test_faust_apps_are_named_like_their_acls() -> None:
    """The group and topic-prefix ACLs above assume Faust app ids lifeline-<service>."""
    for svc in ("processor", "writer", "notifier"):
        source = (ROOT / "services" / svc / "app.py").read_text()
        assert f'make_app("{svc}"' in source
    assert 'f"lifeline-{name}"' in (ROOT / "services/core/faust/app.py").read_text()


def test_kafka_init_refuses_placeholder_passwords(tmp_path: Path) -> None:
    pw = {**_passwords(), "KAFKA_WRITER_PASSWORD": "CHANGE-ME-kafka-writer"}
    proc, calls = _run_kafka_init(tmp_path, **pw)
    assert proc.returncode == 1 and calls == []
    assert "kafka-init: refusing to start: KAFKA_WRITER_PASSWORD is a placeholder" in proc.stderr
    assert "CHANGE-ME-kafka-writer" not in proc.stderr


# --------------------------------------------------------------------------- influxdb
FAKE_INFLUX = r"""#!/usr/bin/python3
# A stand-in for InfluxDB 2's `influx` CLI with the server's state in a JSON file: the
# buckets, DBRP mappings and tasks it was asked to make; each call appended to the log.
import json, sys
from pathlib import Path

state_file, log = Path(sys.argv[0]).parent / "influx-state.json", "@LOG@"
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(" ".join(args) + "\n")
st = json.loads(state_file.read_text()) if state_file.exists() else {
    "buckets": {}, "dbrps": [], "tasks": {}}
opt = lambda flag: args[args.index(flag) + 1] if flag in args else None
cmd = " ".join(args[:2]) if args[0] != "v1" else " ".join(args[:3])
if cmd == "bucket list":
    for name, b in st["buckets"].items():
        if opt("--name") in (None, name):
            print(f"id-{name}\t{name}\t{b['retention']}\t168h0m0s\torg-1\timplicit")
elif cmd == "bucket create":
    if opt("--name") in st["buckets"]:
        sys.exit("Error: bucket with name " + opt("--name") + " already exists")
    st["buckets"][opt("--name")] = {"retention": opt("--retention")}
elif cmd == "bucket update":
    st["buckets"][opt("--id").removeprefix("id-")]["retention"] = opt("--retention")
elif cmd == "v1 dbrp list":
    for i, d in enumerate(st["dbrps"]):
        print(f"dbrp-{i}\t{d['db']}\t{d['bucket']}\t{d['rp']}\t{d['default']}\torg-1")
elif cmd == "v1 dbrp create":
    if any(d["db"] == opt("--db") and d["rp"] == opt("--rp") for d in st["dbrps"]):
        sys.exit("Error: dbrp already exists")
    st["dbrps"].append({"db": opt("--db"), "rp": opt("--rp"), "bucket": opt("--bucket-id"),
                        "default": "--default" in args})
elif cmd == "task list":
    for name in st["tasks"]:
        print(f"task-{name}\t{name}\torg-1\tdistrict\tactive\t1m\t")
elif cmd in ("task create", "task update"):
    flux = Path(opt("--file")).read_text()
    name = flux.split('name: "', 1)[1].split('"', 1)[0]
    if cmd == "task create" and name in st["tasks"]:
        sys.exit("Error: a second task " + name)
    if cmd == "task update" and opt("--id") != f"task-{name}":
        sys.exit("Error: task id " + opt("--id") + " does not hold " + name)
    st["tasks"][name] = flux
elif cmd == "auth create":
    d = opt("--description")
    print('{\n\t"id": "0a1",\n\t"description": "%s",\n\t"token": "tok-%s-0123456789abcdef",'
          '\n\t"status": "active"\n}' % (d, d))
else:
    sys.exit("stand-in influx: unexpected call " + " ".join(args))
state_file.write_text(json.dumps(st))
"""


def _fake_influx(tmp_path: Path, state: dict[str, Any] | None = None) -> Path:
    """The stand-in ``influx`` on ``tmp_path``; by default the state the image's own set-up
    leaves on a new volume (the raw bucket only). Returns the call log."""
    log = tmp_path / "calls"
    _executable(tmp_path / "influx", FAKE_INFLUX.replace("@LOG@", str(log)))
    (tmp_path / "influx-state.json").write_text(json.dumps(state or {
        "buckets": {"lifeline": {"retention": "30d"}}, "dbrps": [], "tasks": {}}))
    return log


def _influx_state(tmp_path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((tmp_path / "influx-state.json").read_text())
    return state


INFLUX_SETUP = str(ROOT / "deploy/influxdb/setup.sh")


def test_influxdb2_setup_maps_both_buckets_and_creates_the_downsampling_task(
        tmp_path: Path) -> None:
    """Runs deploy/influxdb/10-dbrp.sh (the image's first-start hook) with a stand-in
    ``influx`` CLI (no InfluxDB 2 server can run here): both buckets mapped to the
    retention policies the dashboards query, and tasks equivalent to the 1.x continuous
    queries."""
    log = _fake_influx(tmp_path)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "DOCKER_INFLUXDB_INIT_ORG": "district",
           "DOCKER_INFLUXDB_INIT_BUCKET": "lifeline", "DOCKER_INFLUXDB_INIT_RETENTION": "30d",
           "LIFELINE_INFLUX_SETUP": INFLUX_SETUP}
    subprocess.run(["bash", str(ROOT / "deploy/influxdb/10-dbrp.sh")], env=env, check=True,
                   capture_output=True)
    calls = log.read_text().splitlines()
    assert "bucket create --org district --name lifeline_long --retention 0" in calls
    assert ("v1 dbrp create --org district --bucket-id id-lifeline --db lifeline --rp raw "
            "--default") in calls
    assert "v1 dbrp create --org district --bucket-id id-lifeline_long --db lifeline --rp long" \
        in calls
    state = _influx_state(tmp_path)
    flux = "\n".join(state["tasks"].values())
    rollup = (ROOT / "services/writer/rollup.py").read_text()
    for fn in ("mean", "min", "max"):  # the same aggregates as the writer's 1-minute tier
        assert f"{fn}={{_float(" in rollup and f'agg(fn: {fn}, name: "{fn}")' in flux
    assert 'from(bucket: "lifeline")' in flux and 'to(bucket: "lifeline_long"' in flux
    assert '"reading_1m"' in flux and "range(start: -5m)" in flux and "every: 1m" in flux
    assert sorted(state["tasks"]) == ["lifeline-district_1h", "lifeline-reading-1m",
                                      "lifeline-reading_1h"]
    for name in ("reading_1h", "district_1h"):  # the hourly continuous queries' twins
        assert f'name: "lifeline-{name}"' in flux and f'value: "{name}")' in flux
    assert 'group(columns: ["_measurement", "_field", "district", "kind", "metric"])' in flux


def test_influxdb2_setup_runs_on_every_start_and_is_idempotent(tmp_path: Path) -> None:
    """The set-up runs again on every `docker compose up` (tokens.sh calls setup.sh before
    the tokens): a second run makes nothing new and fails on nothing, re-applies a changed
    raw retention, and a volume made by an older release (no hourly tasks, an older Flux
    for the 1-minute task) is brought up to this release's layout."""
    log = _fake_influx(tmp_path)
    first = {"PATH": f"{tmp_path}:/usr/bin:/bin", "DOCKER_INFLUXDB_INIT_ORG": "district",
             "DOCKER_INFLUXDB_INIT_BUCKET": "lifeline", "DOCKER_INFLUXDB_INIT_RETENTION": "30d",
             "LIFELINE_INFLUX_SETUP": INFLUX_SETUP}
    subprocess.run(["bash", str(ROOT / "deploy/influxdb/10-dbrp.sh")], env=first, check=True,
                   capture_output=True)
    made = _influx_state(tmp_path)
    # Every later `up`: the influxdb-tokens service, with its own variables (compose).
    tokens = tmp_path / "tokens"
    _executable(tmp_path / "chown", "#!/bin/bash\n")
    later = {"PATH": f"{tmp_path}:/usr/bin:/bin", "INFLUX_ORG": "district",
             "INFLUX_BUCKET": "lifeline", "INFLUX_RETENTION": "30d",
             "LIFELINE_TOKEN_DIR": str(tokens), "LIFELINE_INFLUX_SETUP": INFLUX_SETUP}
    for _ in range(2):
        before = len(log.read_text().splitlines())
        run = subprocess.run(["bash", str(ROOT / "deploy/influxdb/tokens.sh")], env=later,
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        assert _influx_state(tmp_path) == made  # the same end state
        again = log.read_text().splitlines()[before:]
        assert not [c for c in again if " create " in f" {c} " and not c.startswith("auth")]
    compose_env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())[
        "services"]["influxdb-tokens"]["environment"]
    assert compose_env["INFLUX_RETENTION"] == "${INFLUX_RETENTION:-30d}"
    # The operator changes the raw retention in .env: the next `up` applies it.
    subprocess.run(["bash", INFLUX_SETUP], env={**later, "INFLUX_RETENTION": "90d"},
                   check=True, capture_output=True)
    assert _influx_state(tmp_path)["buckets"] == {"lifeline": {"retention": "90d"},
                                                  "lifeline_long": {"retention": "0"}}
    # A volume from an older release: the mappings and an older 1-minute task only.
    old = tmp_path / "old"
    old.mkdir()
    _fake_influx(old, {"buckets": {"lifeline": {"retention": "30d"},
                                   "lifeline_long": {"retention": "0"}},
                       "dbrps": made["dbrps"],
                       "tasks": {"lifeline-reading-1m": 'option task = {name: '
                                 '"lifeline-reading-1m", every: 5m}\n'}})
    subprocess.run(["bash", INFLUX_SETUP], env={**later, "PATH": f"{old}:/usr/bin:/bin"},
                   check=True, capture_output=True)
    assert _influx_state(old)["tasks"] == made["tasks"]
    assert _influx_state(old)["dbrps"] == made["dbrps"]
    # A mapping that points elsewhere is not silently kept or duplicated: one clear error.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    _fake_influx(wrong, {**made, "dbrps": [{**made["dbrps"][0], "bucket": "id-other"}]})
    bad = subprocess.run(["bash", INFLUX_SETUP], env={**later, "PATH": f"{wrong}:/usr/bin:/bin"},
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "lifeline/raw is mapped to bucket id-other" in bad.stderr


def test_influxdb_tokens_give_each_client_only_what_it_needs(tmp_path: Path) -> None:
    """deploy/influxdb/tokens.sh with a stand-in ``influx`` and ``chown``: the writer may
    write its two buckets (and read the long one for its baseline), the notifier and
    Grafana may only read; each token lands in its client's own file, owned by that client;
    a second run keeps them."""
    log = _fake_influx(tmp_path)
    _executable(tmp_path / "chown", f'#!/bin/bash\necho "$*" >> {tmp_path}/chowns\n')
    out = tmp_path / "tokens"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "INFLUX_ORG": "district",
           "INFLUX_BUCKET": "lifeline", "LIFELINE_TOKEN_DIR": str(out)}
    subprocess.run(["bash", str(ROOT / "deploy/influxdb/tokens.sh")], env=env, check=True,
                   capture_output=True)
    auths = {}
    for line in log.read_text().splitlines():
        if line.startswith("auth create"):
            args = line.split()
            client = args[args.index("--description") + 1].removeprefix("lifeline-")
            flags = [(args[i], args[i + 1]) for i, a in enumerate(args)
                     if a in ("--write-bucket", "--read-bucket")]
            auths[client] = sorted(flags)
            assert not {"--all-access", "--operator", "--write-buckets", "--read-buckets"} & \
                set(args)
    assert auths == {
        "writer": sorted([("--write-bucket", "id-lifeline"), ("--write-bucket", "id-lifeline_long"),
                          ("--read-bucket", "id-lifeline_long")]),
        "notifier": sorted([("--read-bucket", "id-lifeline"), ("--read-bucket", "id-lifeline_long")]),
        "grafana": sorted([("--read-bucket", "id-lifeline"), ("--read-bucket", "id-lifeline_long")]),
        "orders": [("--read-bucket", "id-lifeline_long")],  # the reports only
    }
    for client in auths:
        token = out / client / "token"
        assert token.read_text() == f"tok-lifeline-{client}-0123456789abcdef\n"
        assert token.stat().st_mode & 0o777 == 0o400
    owners = (tmp_path / "chowns").read_text().split()
    assert owners[0::2] == ["10001:10001", "10001:10001", "472:472", "10001:10001"]
    before = log.read_text()
    subprocess.run(["bash", str(ROOT / "deploy/influxdb/tokens.sh")], env=env, check=True,
                   capture_output=True)
    assert "auth create" not in log.read_text()[len(before):]


@pytest.mark.parametrize(("var", "env_name"), [("DOCKER_INFLUXDB_INIT_PASSWORD",
                                                "INFLUX_ADMIN_PASSWORD"),
                                               ("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN",
                                                "INFLUX_TOKEN")])
def test_influxdb_refuses_placeholder_admin_secrets(tmp_path: Path, var: str,
                                                    env_name: str) -> None:
    ran = tmp_path / "ran"
    stand_in = _executable(tmp_path / "entrypoint.sh", f'#!/bin/bash\necho "$*" > {ran}\n')
    good = {"DOCKER_INFLUXDB_INIT_PASSWORD": secrets.token_urlsafe(18),
            "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN": secrets.token_urlsafe(32)}
    env = {"PATH": "/usr/bin:/bin", "INFLUXDB_ENTRYPOINT": str(stand_in),
           "LIFELINE_CHECK_SECRET": CHECK_SECRET}
    ok = subprocess.run(["bash", str(ROOT / "deploy/influxdb/entrypoint.sh"), "influxd"],
                        env={**env, **good}, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ran.read_text().strip() == "influxd"
    bad = subprocess.run(["bash", str(ROOT / "deploy/influxdb/entrypoint.sh"), "influxd"],
                         env={**env, **good, var: "CHANGE-ME-long-random-token"},
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert f"influxdb: refusing to start: {env_name} is a placeholder" in bad.stderr
    assert "CHANGE-ME-long" not in bad.stderr


def test_grafana_reads_its_own_token_and_refuses_a_placeholder_password(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("grafana-read-only-token-0123456789\n")
    run = _executable(tmp_path / "run.sh", f'#!/bin/sh\necho "$INFLUX_TOKEN" > {tmp_path}/env\n')
    env = {"PATH": "/usr/bin:/bin", "GRAFANA_RUN": str(run), "INFLUX_TOKEN_FILE": str(token),
           "LIFELINE_CHECK_SECRET": CHECK_SECRET}
    env["POSTGRES_GRAFANA_PASSWORD"] = secrets.token_urlsafe(18)
    ok = subprocess.run(["sh", str(ROOT / "deploy/grafana/entrypoint.sh")], capture_output=True,
                        text=True, check=False,
                        env={**env, "GF_SECURITY_ADMIN_PASSWORD": secrets.token_urlsafe(18)})
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "env").read_text().strip() == "grafana-read-only-token-0123456789"
    bad = subprocess.run(["sh", str(ROOT / "deploy/grafana/entrypoint.sh")], capture_output=True,
                         text=True, check=False,
                         env={**env, "GF_SECURITY_ADMIN_PASSWORD": "CHANGE-ME-grafana"})
    assert bad.returncode == 1 and "GRAFANA_ADMIN_PASSWORD is a placeholder" in bad.stderr
    reader = subprocess.run(["sh", str(ROOT / "deploy/grafana/entrypoint.sh")],
                            capture_output=True, text=True, check=False,
                            env={**env, "GF_SECURITY_ADMIN_PASSWORD": secrets.token_urlsafe(18),
                                 "POSTGRES_GRAFANA_PASSWORD": "CHANGE-ME-postgres-reader"})
    assert reader.returncode == 1 and "POSTGRES_READER_PASSWORD is a placeholder" in reader.stderr
    datasource = (ROOT / "grafana/provisioning/datasources/lifeline.yaml").read_text()
    assert "Token ${INFLUX_TOKEN}" in datasource


# --------------------------------------------------------------------------- mosquitto
def _mosquitto(tmp_path: Path, *, accounts: bool = False, certs: bool = True,
               **env: str) -> tuple[subprocess.CompletedProcess[str], Path, Path, Path]:
    """deploy/mosquitto/entrypoint.sh with its paths moved under tmp_path and stand-ins for
    mosquitto_passwd and mosquitto (no Docker engine here to run the image itself)."""
    import shutil

    cfg, data = tmp_path / "config", tmp_path / "data"
    cfg.mkdir(parents=True)
    data.mkdir()
    shutil.copy(ROOT / "deploy/mosquitto/mosquitto.conf", cfg / "mosquitto.conf")
    shutil.copy(ROOT / "deploy/mosquitto/acl", cfg / "acl")
    if accounts:
        (cfg / "accounts").mkdir()
        (cfg / "accounts" / "passwd").write_text("DR-BH-001:$7$hash\n")
        (cfg / "accounts" / "acl").write_text("user DR-BH-001\ntopic write x\n")
    if certs:
        (cfg / "certs").mkdir()
        for f in ("ca.crt", "server.crt", "server.key"):
            (cfg / "certs" / f).write_text("pem")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in (("mosquitto_passwd", f'echo "$*" >> {tmp_path}/passwd-calls\n'),
                       ("mosquitto", f'echo "$*" > {tmp_path}/ran\n'),
                       ("chown", "true\n")):
        _executable(bin_ / name, "#!/bin/sh\n" + body)
    script = (ROOT / "deploy/mosquitto/entrypoint.sh").read_text().replace(
        "/mosquitto/config", str(cfg)).replace("/mosquitto/data", str(data))
    (tmp_path / "entry.sh").write_text(script)
    proc = subprocess.run(["sh", str(tmp_path / "entry.sh")], capture_output=True, text=True,
                          check=False,
                          env={"PATH": f"{bin_}:/usr/bin:/bin", "LIFELINE_CHECK_SECRET": CHECK_SECRET,
                               "MQTT_INGEST_PASSWORD": secrets.token_urlsafe(18), **env})
    return proc, cfg, data, tmp_path / "passwd-calls"


def test_mosquitto_production_configuration(tmp_path: Path) -> None:
    proc, _, data, passwd_calls = _mosquitto(tmp_path, MQTT_SIMULATOR_PASSWORD="s" * 8 + "x" * 8)
    assert proc.returncode == 0, proc.stderr
    conf = (data / "mosquitto.conf").read_text()
    assert (tmp_path / "ran").read_text().strip() == f"-c {data / 'mosquitto.conf'}"
    assert "listener 8883" in conf and "listener 1883" not in conf  # TLS only
    assert "use_username_as_clientid true" in conf
    assert "allow_anonymous false" in conf and "per_listener_settings false" in conf
    assert f"acl_file {data}/acl" in conf
    # No simulator (wildcard-write) account unless a test deployment asks for one.
    users = [line.split()[-2] for line in passwd_calls.read_text().splitlines()]
    assert users == ["lifeline-ingest"]
    assert "lifeline-simulator" not in (data / "acl").read_text()
    assert "topic write lifeline/+/+/telemetry" not in (data / "acl").read_text()


def test_mosquitto_with_generated_gateway_accounts(tmp_path: Path) -> None:
    proc, cfg, data, passwd_calls = _mosquitto(tmp_path, accounts=True)
    assert proc.returncode == 0, proc.stderr
    conf = (data / "mosquitto.conf").read_text()
    assert f"acl_file {cfg}/accounts/acl" in conf and "listener 8883" in conf
    assert (data / "passwd").read_text() == "DR-BH-001:$7$hash\n"
    assert not passwd_calls.exists()


def test_mosquitto_test_deployment_with_simulator_and_plain_listener(tmp_path: Path) -> None:
    proc, _, data, passwd_calls = _mosquitto(
        tmp_path, certs=False, MQTT_ENABLE_SIMULATOR="true", MQTT_PLAIN_LISTENER="true",
        MQTT_SIMULATOR_PASSWORD=secrets.token_urlsafe(18))
    assert proc.returncode == 0, proc.stderr
    conf = (data / "mosquitto.conf").read_text()
    assert "listener 1883" in conf and "listener 8883" not in conf
    users = [line.split()[-2] for line in passwd_calls.read_text().splitlines()]
    assert users == ["lifeline-ingest", "lifeline-simulator"]
    assert "user lifeline-simulator\ntopic write lifeline/+/+/telemetry" in \
        (data / "acl").read_text()


def test_mosquitto_refuses_plain_mqtt_and_placeholder_passwords(tmp_path: Path) -> None:
    proc, *_ = _mosquitto(tmp_path / "a", certs=False)
    assert proc.returncode == 1 and "no TLS certificates" in proc.stderr
    assert not (tmp_path / "a" / "ran").exists()
    proc, *_ = _mosquitto(tmp_path / "b", MQTT_INGEST_PASSWORD="CHANGE-ME-ingest")
    assert proc.returncode == 1
    assert "mosquitto: refusing to start: MQTT_INGEST_PASSWORD is a placeholder" in proc.stderr
    assert "CHANGE-ME-ingest" not in proc.stderr
    proc, *_ = _mosquitto(tmp_path / "c", MQTT_ENABLE_SIMULATOR="true",
                          MQTT_SIMULATOR_PASSWORD="")
    assert proc.returncode == 1 and "MQTT_SIMULATOR_PASSWORD is shorter" in proc.stderr


# --------------------------------------------------------------------------- certificates
def test_make_certs_gives_verifiable_certificates_kept_out_of_git(tmp_path: Path) -> None:
    import shutil

    work = tmp_path / "deploy"
    (work / "mosquitto").mkdir(parents=True)
    (work / "kafka").mkdir()
    shutil.copy(ROOT / "deploy/make-certs.sh", work / "make-certs.sh")
    env = {"PATH": "/usr/bin:/bin", "MQTT_CERT_HOSTS": "mosquitto,mqtt.lifeline.test"}
    subprocess.run(["bash", str(work / "make-certs.sh")], env=env, check=True,
                   capture_output=True)

    def openssl(*args: str) -> str:
        return subprocess.run(["openssl", *args], check=True, capture_output=True,
                              text=True).stdout

    ca = work / "certs" / "ca.crt"
    assert "OK" in openssl("verify", "-CAfile", str(ca), str(work / "mosquitto/certs/server.crt"))
    san = openssl("x509", "-in", str(work / "mosquitto/certs/server.crt"), "-noout", "-ext",
                  "subjectAltName")
    assert "DNS:mosquitto" in san and "DNS:mqtt.lifeline.test" in san
    chain = openssl("pkcs12", "-in", str(work / "kafka/certs/kafka.p12"), "-passin",
                    f"file:{work / 'kafka/certs/kafka.p12.pass'}", "-nokeys")
    assert "BEGIN CERTIFICATE" in chain
    assert "DNS:kafka" in openssl("x509", "-in", str(work / "kafka/certs/kafka.crt"), "-noout",
                                  "-ext", "subjectAltName")
    assert (work / "clients/ca.crt").read_bytes() == ca.read_bytes()
    assert (work / "certs/ca.key").stat().st_mode & 0o077 == 0
    assert (work / "mosquitto/certs/server.key").stat().st_mode & 0o077 == 0
    assert not (work / "kafka/certs/kafka.key").exists()  # only inside the keystore
    # A second run renews the servers' certificates with the same CA.
    before = ca.read_bytes()
    subprocess.run(["bash", str(work / "make-certs.sh")], env=env, check=True,
                   capture_output=True)
    assert ca.read_bytes() == before
    # None of it can be committed.
    for path in ("deploy/certs/ca.key", "deploy/certs/ca.crt", "deploy/clients/ca.crt",
                 "deploy/kafka/certs/kafka.p12", "deploy/kafka/certs/kafka.p12.pass",
                 "deploy/mosquitto/certs/server.key"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored by git"


# --------------------------------------------------------------------------- configuration reload
def test_every_service_mounts_the_registry_and_oncall_folders(compose: dict[str, Any]) -> None:
    """Every service reloads the registry and the on-call file when they change
    (services/core/reload.py), so every one sees the operator's copy — mounted as folders
    (an editor's rename-over and Kubernetes' ..data swap reach a folder mount, never a
    single-file or subPath mount) at the paths the services read."""
    prod = dotenv_values(ROOT / "deploy" / "lifeline.production.env")
    docker = (ROOT / "Dockerfile").read_text()
    registry = re.search(r"LIFELINE_REGISTRY=(\S+)", docker)
    assert registry is not None
    registry_path, oncall_path = registry.group(1), f"/app/{prod['LIFELINE_NOTIFIER_ONCALL']}"
    for name in SERVICES:
        volumes = compose["services"][name]["volumes"]
        assert "./deploy/registry:/app/deploy/registry:ro" in volumes, name
        assert "./deploy/oncall:/app/deploy/oncall:ro" in volumes, name
        assert "./deploy/clients:/etc/lifeline/tls:ro" in volumes, name
        mounts = {v.split(":")[1] for v in volumes}
        assert str(Path(registry_path).parent) in mounts and \
            str(Path(oncall_path).parent) in mounts, name

    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/lifeline.yaml").read_text())
            if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    header = (ROOT / "deploy/kubernetes/lifeline.yaml").read_text()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == set(SERVICES)
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "registry"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "registry"]
        assert volume["configMap"] == {"name": "lifeline-registry"}
        assert "subPath" not in mount and mount["readOnly"] is True
        for setting in ("LIFELINE_REGISTRY", "LIFELINE_NOTIFIER_ONCALL"):
            path = Path(config[setting])
            assert str(path.parent) == mount["mountPath"], (d["metadata"]["name"], setting)
            # the key of the ConfigMap created as the manifest's header says
            assert f"--from-file={path.name}=" in header
