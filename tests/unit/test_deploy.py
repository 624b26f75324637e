"""Production deployment files, checked offline (no Docker engine or cluster runs here):
docker-compose.yml against the compose-spec JSON Schema, the Kubernetes manifests against
the Kubernetes schemas, and the promise that only configuration differs from the local stack."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}|\$([A-Z0-9_]+)")


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
def compose(example_env: dict[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return dict(interpolate(raw, example_env))


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
            assert "healthcheck" in svc or name in ("ingest", "processor", "writer",
                                                   "notifier"), name
    stateful = {"mosquitto": "/mosquitto/data", "kafka": "/var/lib/kafka/data",
                "influxdb": "/var/lib/influxdb2", "grafana": "/var/lib/grafana"}
    for name, path in stateful.items():
        mounts = services[name]["volumes"]
        assert any(m.split(":")[0] in compose["volumes"] and m.split(":")[1] == path
                   for m in mounts), f"{name} keeps {path} in a named volume"


def test_processor_can_be_scaled(compose: dict[str, Any]) -> None:
    proc = compose["services"]["processor"]
    assert "container_name" not in proc and "ports" not in proc
    assert proc["command"] == ["processor"]


def _production_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = {k: v or "" for k, v in dotenv_values(ROOT / "deploy" / "lifeline.production.env")
           .items()}
    env.update({k: str(v) for k, v in compose["services"][service]["environment"].items()})
    return env


@pytest.mark.parametrize("service", ["ingest", "processor", "writer", "notifier"])
def test_compose_selects_the_production_paths(compose: dict[str, Any], service: str,
                                              monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    from services.core import faust_app
    from services.core.kafka import faust_kwargs, producer_kwargs
    from services.core.settings import InfluxSettings, KafkaSettings
    from services.writer.sinks import InfluxV2Sink, make_sink

    for key in [k for k in os.environ if k.startswith("LIFELINE_")]:
        monkeypatch.delenv(key)
    for key, value in _production_env(compose, service).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))
    kafka = KafkaSettings()
    assert kafka.flavor == "kafka" and kafka.bootstrap == "kafka:9092"
    assert kafka.partitions == 12
    fk = faust_kwargs(kafka)
    # None of the Tansu workarounds is active against real Kafka.
    assert "producer_max_batch_size" not in fk and "broker_session_timeout" not in fk
    assert producer_kwargs(kafka, "x")["enable_idempotence"] is True
    assert producer_kwargs(kafka, "x")["linger_ms"] == 20  # Tansu's 100 ms is not used
    if service == "processor":
        from services.processor.config import ProcessorSettings

        assert ProcessorSettings().checkpoint_rate(kafka.flavor) == 1000
    patched: list[bool] = []
    monkeypatch.setattr(faust_app, "_short_fetch_wait_on_tansu", lambda: patched.append(True))
    faust_app.make_app(f"deploy-test-{service}", kafka, web_port=8080)
    assert patched == []
    assert isinstance(make_sink(InfluxSettings()), InfluxV2Sink)
    if service == "notifier":
        from schemas.oncall import load_oncall
        from services.notifier.config import NotifierSettings

        ns = NotifierSettings()
        assert ns.public_url.startswith("https://") and ns.health_port == 8080
        assert len(ns.link_secret.get_secret_value()) >= 16
        channel_vars = {c.token_env or "" for c in load_oncall(ROOT / ns.oncall).channels} | {
            c.secret_env or "" for c in load_oncall(ROOT / ns.oncall).channels}
        assert channel_vars - {""} <= set(compose["services"]["notifier"]["environment"])


def test_dockerfile_installs_like_the_project() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    boot = (ROOT / "scripts" / "bootstrap.sh").read_text()
    assert "FROM python:3.11-" in docker
    assert "pip install --no-cache-dir --disable-pip-version-check -c constraints.txt ." in docker
    assert "pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'" in boot
    assert "USER lifeline" in docker and "HEALTHCHECK" in docker
    for pkg in ("schemas", "services", "simulators"):
        assert f"COPY {pkg} ./{pkg}" in docker  # every package pyproject.toml installs


def test_kubernetes_manifests_are_valid() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/lifeline.yaml").read_text())
            if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 4 and "ConfigMap" in kinds
    for d in docs:
        kubernetes_validate.validate(d, "1.30.0", strict=True)
        if d["kind"] == "Deployment":
            c = d["spec"]["template"]["spec"]["containers"][0]
            assert c["readinessProbe"]["httpGet"]["path"] == "/health"
            assert {"configMapRef": {"name": "lifeline-config"}} in c["envFrom"]
            assert {"secretRef": {"name": "lifeline-secrets"}} in c["envFrom"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert config["LIFELINE_KAFKA_FLAVOR"] == "kafka" and config["LIFELINE_INFLUX_API"] == "v2"
    assert not any("PASSWORD" in k or "TOKEN" in k for k in config), "secrets belong in a Secret"


def test_compose_creates_every_lifeline_topic() -> None:
    from services.core import topics

    text = (ROOT / "docker-compose.yml").read_text()
    for t in topics.ALL:
        assert t in text, f"kafka-init does not create {t}"


def test_influxdb2_setup_maps_both_buckets_and_creates_the_downsampling_task(
        tmp_path: Path) -> None:
    """Runs deploy/influxdb/10-dbrp.sh with a stand-in ``influx`` CLI that records each call
    (no InfluxDB 2 server can run here): both buckets mapped to the retention policies the
    dashboards query, and a task equivalent to the 1.x continuous query."""
    import stat
    import subprocess

    log = tmp_path / "calls"
    fake = tmp_path / "influx"
    fake.write_text(f"""#!/bin/bash
echo "$*" >> {log}
for ((i=1; i<=$#; i++)); do
  if [ "${{!i}}" = "--file" ]; then j=$((i+1)); cat "${{!j}}" >> {tmp_path}/task.flux; fi
done
if [ "$1 $2" = "bucket list" ]; then printf 'id-%s\\tname\\n' "$6"; fi
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "DOCKER_INFLUXDB_INIT_ORG": "district",
           "DOCKER_INFLUXDB_INIT_BUCKET": "lifeline"}
    subprocess.run(["bash", str(ROOT / "deploy/influxdb/10-dbrp.sh")], env=env, check=True,
                   capture_output=True)
    calls = log.read_text().splitlines()
    assert "bucket create --org district --name lifeline_long --retention 0" in calls
    assert ("v1 dbrp create --org district --bucket-id id-lifeline --db lifeline --rp raw "
            "--default") in calls
    assert "v1 dbrp create --org district --bucket-id id-lifeline_long --db lifeline --rp long" \
        in calls
    flux = (tmp_path / "task.flux").read_text()
    from services.writer.storage import continuous_query

    cq = continuous_query("lifeline", "1m", "5m")
    for fn in ("mean", "min", "max"):  # the same aggregates as the 1.x continuous query
        assert f'{fn}("value") AS "{fn}"' in cq and f'agg(fn: {fn}, name: "{fn}")' in flux
    assert 'from(bucket: "lifeline")' in flux and 'to(bucket: "lifeline_long"' in flux
    assert '"reading_1m"' in flux and "range(start: -5m)" in flux and "every: 1m" in flux
    assert sum(c.startswith("task create") for c in calls) == 3
    for name in ("reading_1h", "district_1h"):  # the hourly continuous queries' twins
        assert f'name: "lifeline-{name}"' in flux and f'value: "{name}")' in flux
    assert 'group(columns: ["_measurement", "_field", "district", "kind", "metric"])' in flux


@pytest.mark.parametrize("with_accounts_and_certs", [False, True])
def test_mosquitto_entrypoint_builds_the_broker_configuration(
        tmp_path: Path, with_accounts_and_certs: bool) -> None:
    """deploy/mosquitto/entrypoint.sh with its paths moved under tmp_path and stand-ins for
    mosquitto_passwd and mosquitto (no Docker engine here to run the image itself)."""
    import shutil
    import stat
    import subprocess

    cfg, data = tmp_path / "config", tmp_path / "data"
    cfg.mkdir()
    data.mkdir()
    shutil.copy(ROOT / "deploy/mosquitto/mosquitto.conf", cfg / "mosquitto.conf")
    shutil.copy(ROOT / "deploy/mosquitto/acl", cfg / "acl")
    if with_accounts_and_certs:
        (cfg / "accounts").mkdir()
        (cfg / "accounts" / "passwd").write_text("DR-BH-001:$7$hash\n")
        (cfg / "accounts" / "acl").write_text("user DR-BH-001\ntopic write x\n")
        (cfg / "certs").mkdir()
        for f in ("ca.crt", "server.crt", "server.key"):
            (cfg / "certs" / f).write_text("pem")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in (("mosquitto_passwd", f'echo "$*" >> {tmp_path}/passwd-calls\n'),
                       ("mosquitto", f'echo "$*" > {tmp_path}/ran\n'),
                       ("chown", "true\n")):
        (bin_ / name).write_text("#!/bin/sh\n" + body)
        (bin_ / name).chmod(0o755 | stat.S_IEXEC)
    script = (ROOT / "deploy/mosquitto/entrypoint.sh").read_text().replace(
        "/mosquitto/config", str(cfg)).replace("/mosquitto/data", str(data))
    (tmp_path / "entry.sh").write_text(script)
    subprocess.run(["sh", str(tmp_path / "entry.sh")], check=True, capture_output=True,
                   env={"PATH": f"{bin_}:/usr/bin:/bin", "MQTT_INGEST_PASSWORD": "i" * 16,
                        "MQTT_SIMULATOR_PASSWORD": "s" * 16})
    conf = (data / "mosquitto.conf").read_text()
    assert (tmp_path / "ran").read_text().strip() == f"-c {data / 'mosquitto.conf'}"
    if with_accounts_and_certs:
        assert f"acl_file {cfg}/accounts/acl" in conf and "listener 8883" in conf
        assert (data / "passwd").read_text() == "DR-BH-001:$7$hash\n"
        assert not (tmp_path / "passwd-calls").exists()
    else:
        assert f"acl_file {cfg}/acl" in conf and "listener 8883" not in conf
        assert "lifeline-ingest" in (tmp_path / "passwd-calls").read_text()
    assert "allow_anonymous false" in conf and "per_listener_settings false" in conf
