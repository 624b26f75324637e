"""Secrets refused at start-up: placeholders, published example values, short or
low-variety strings — with one line naming the setting and never the value
(services/core/settings.py: ``Secret``, ``load``, ``SettingsError``)."""

from __future__ import annotations

import secrets
import subprocess
import typing
from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import SecretStr, ValidationError

from services.core.settings import (
    InfluxSettings,
    KafkaSettings,
    MqttSettings,
    SettingsError,
    check_secret,
    load,
    secret_problem,
)

ROOT = Path(__file__).resolve().parents[2]
GOOD = "q7Vx2LpN9sKd4TwYb8Rz"  # 20 characters, not a pattern anybody publishes

# (environment variable, settings class, extra environment that makes the secret used)
SECRET_SETTINGS = [
    ("LIFELINE_MQTT_PASSWORD", MqttSettings, {}),
    ("LIFELINE_KAFKA_SASL_PASSWORD", KafkaSettings,
     {"LIFELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "LIFELINE_KAFKA_SASL_USERNAME": "lifeline-ingest"}),
    ("LIFELINE_INFLUX_TOKEN", InfluxSettings, {}),
    ("LIFELINE_INFLUX_PASSWORD", InfluxSettings, {}),
]
REFUSED = [
    ("CHANGE-ME-ingest", "a published example value"),
    ("CHANGE-ME-something-else-long", "a placeholder (contains 'change-me')"),
    ("my-changeme-secret-value-0123", "a placeholder (contains 'changeme')"),
    ("Replace_Me_With_A_Real_Token", "a placeholder (contains 'replace_me')"),
    ("an-example-token-0123456789", "a placeholder (contains 'example')"),
    ("placeholder-token-0123456789", "a placeholder (contains 'placeholder')"),
    ("my-super-secret-auth-token", "a published example value"),
    ("sh0rt-Secret", "shorter than 16 characters"),
    ("aaaaaaaaaaaaaaaaaaaaaaaa", "fewer than 6 distinct characters"),
    ("abababababababababab", "fewer than 6 distinct characters"),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("LIFELINE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LIFELINE_STATE_DIR", str(tmp_path))  # no stack.env


@pytest.mark.parametrize(("var", "cls", "extra"), SECRET_SETTINGS)
@pytest.mark.parametrize(("value", "reason"), REFUSED)
def test_each_secret_setting_refuses_bad_values_without_showing_them(
        monkeypatch: pytest.MonkeyPatch, var: str, cls: type, extra: dict[str, str],
        value: str, reason: str) -> None:
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        load(cls)
    message = str(info.value.code)
    assert message == f"lifeline: refusing to start: {var}: {reason}" + message.split(reason, 1)[1]
    assert len(message.splitlines()) == 1 and value not in message
    assert info.value.lines == [message.removeprefix("lifeline: refusing to start: ")]
    # Constructed directly (not through load): pydantic's error hides the input too.
    with pytest.raises(ValidationError) as direct:
        cls()
    assert value not in str(direct.value) and reason in str(direct.value)


@pytest.mark.parametrize(("var", "cls", "extra"), SECRET_SETTINGS)
def test_good_secrets_are_accepted(monkeypatch: pytest.MonkeyPatch, var: str, cls: type,
                                   extra: dict[str, str]) -> None:
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    for value in (GOOD, secrets.token_urlsafe(18), secrets.token_hex(32),
                  "glsa_" + secrets.token_urlsafe(24)):
        monkeypatch.setenv(var, value)
        settings = load(cls)
        field = var.removeprefix(str(cls.model_config["env_prefix"])).lower()
        got = getattr(settings, field)
        assert isinstance(got, SecretStr) and got.get_secret_value() == value
        assert value not in repr(settings) and value not in str(settings)


def test_unset_secrets_stay_unset() -> None:
    assert load(MqttSettings).password.get_secret_value() == ""
    assert load(InfluxSettings).token is None and load(KafkaSettings).sasl_password is None


def test_the_published_example_files_hold_no_usable_secret() -> None:
    """Every secret in .env.example (and any in deploy/lifeline.production.env) is refused."""
    for path in (ROOT / ".env.example", ROOT / "deploy" / "lifeline.production.env"):
        for key, value in dotenv_values(path).items():
            if not value or not any(w in key for w in ("PASSWORD", "TOKEN", "SECRET", "KEY")):
                continue
            if key.endswith("_FILE"):
                continue
            assert secret_problem(value) is not None, f"{path.name}: {key} would be accepted"
    example = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v}
    exact = [v for v in example.values() if "CHANGE-ME" in v]
    assert exact and all(secret_problem(v) == "a published example value, not a secret; set "
                         "a value of your own" for v in exact)


def test_several_problems_are_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_INFLUX_TOKEN", "CHANGE-ME-long-random-token")
    monkeypatch.setenv("LIFELINE_INFLUX_PASSWORD", "short")
    with pytest.raises(SettingsError) as info:
        load(InfluxSettings)
    assert sorted(line.split(":")[0] for line in info.value.lines) == [
        "LIFELINE_INFLUX_PASSWORD", "LIFELINE_INFLUX_TOKEN"]
    assert "CHANGE-ME" not in str(info.value.code) and "short\n" not in str(info.value.code)


def test_check_secret_for_command_line_options() -> None:
    check_secret("LIFELINE_GRAFANA_TOKEN", "glsa_" + secrets.token_urlsafe(24))
    check_secret("LIFELINE_GRAFANA_TOKEN", "")  # not given: the option's own rule
    with pytest.raises(ValueError, match=r"^LIFELINE_GRAFANA_TOKEN is refused: a placeholder"):
        check_secret("LIFELINE_GRAFANA_TOKEN", "CHANGE-ME-grafana-token-value")


def test_influx_token_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(f"{GOOD}\n")
    monkeypatch.setenv("LIFELINE_INFLUX_TOKEN_FILE", str(token))
    settings = load(InfluxSettings)
    assert settings.token is not None and settings.token.get_secret_value() == GOOD
    token.write_text("CHANGE-ME-long-random-token\n")
    with pytest.raises(SettingsError, match="LIFELINE_INFLUX_TOKEN: a published example"):
        load(InfluxSettings)
    token.unlink()
    with pytest.raises(SettingsError, match="LIFELINE_INFLUX_TOKEN_FILE: cannot read it"):
        load(InfluxSettings)
    token.write_text("\n")
    with pytest.raises(SettingsError, match="LIFELINE_INFLUX_TOKEN_FILE: the file is empty"):
        load(InfluxSettings)
    monkeypatch.setenv("LIFELINE_INFLUX_TOKEN", GOOD)
    with pytest.raises(SettingsError, match="not both"):
        load(InfluxSettings)


def test_mqtt_password_never_travels_in_the_clear_off_loopback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_MQTT_PASSWORD", GOOD)
    monkeypatch.setenv("LIFELINE_MQTT_HOST", "mosquitto")
    with pytest.raises(SettingsError, match=r"LIFELINE_MQTT_TLS=false to a broker that is not "
                                            r"on loopback"):
        load(MqttSettings)
    monkeypatch.setenv("LIFELINE_MQTT_TLS", "true")
    assert load(MqttSettings).tls
    monkeypatch.setenv("LIFELINE_MQTT_TLS", "false")
    monkeypatch.setenv("LIFELINE_MQTT_ALLOW_PLAINTEXT", "true")
    assert not load(MqttSettings).tls
    for host in ("127.0.0.1", "localhost", "::1"):  # the local stack
        monkeypatch.delenv("LIFELINE_MQTT_ALLOW_PLAINTEXT", raising=False)
        monkeypatch.setenv("LIFELINE_MQTT_HOST", host)
        assert load(MqttSettings).host == host


def test_every_secret_field_of_these_settings_is_a_checked_secret() -> None:
    from services.core import settings as module
    from services.ingest.config import IngestSettings
    from services.processor.config import ProcessorSettings
    from services.writer.config import WriterSettings

    classes = [KafkaSettings, MqttSettings, InfluxSettings, module.RegistrySettings,
               IngestSettings, ProcessorSettings, WriterSettings]
    for cls in classes:
        for name, field in cls.model_fields.items():
            if field.annotation is None or "SecretStr" not in str(field.annotation):
                assert not any(w in name for w in ("password", "secret")) or \
                    name.endswith("_file"), f"{cls.__name__}.{name} is not a SecretStr"
                continue
            assert any(getattr(m, "func", None) is module._validate_secret
                       for m in field.metadata) or _optional_secret(field.annotation), \
                f"{cls.__name__}.{name} is not a Secret"


def _optional_secret(annotation: object) -> bool:
    from services.core import settings as module

    for arg in typing.get_args(annotation):
        for meta in getattr(arg, "__metadata__", ()):
            if getattr(meta, "func", None) is module._validate_secret:
                return True
    return False


@pytest.mark.parametrize(("value", "refused"), [
    ("CHANGE-ME-ingest", True), ("an-example-value-0123456789", True), ("sh0rt", True),
    (GOOD, False)])
def test_the_brokers_shell_check_agrees(tmp_path: Path, value: str, refused: bool) -> None:
    script = tmp_path / "t.sh"
    script.write_text(f'who=test\n. "{ROOT / "deploy/check-secret.sh"}"\n'
                      'check_secret SOME_PASSWORD "$V"\necho accepted\n')
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=False,
                          env={"PATH": "/usr/bin:/bin", "V": value})
    assert (proc.returncode == 1) is refused
    assert (secret_problem(value) is not None) is refused
    if refused:
        assert proc.stderr.startswith("test: refusing to start: SOME_PASSWORD ")
        assert value not in proc.stderr


def test_the_notifier_refuses_placeholder_channel_secrets() -> None:
    from services.core.settings import SettingsError
    from services.notifier.app import channel_secrets_checked
    from tests.support.oncall_helpers import config

    cfg = config([{"id": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x",
                   "secret_env": "TEST_HOOK_SECRET"},
                  {"id": "mail", "type": "email", "smtp_host": "127.0.0.1",
                   "sender": "a@example.org", "secret_env": "TEST_SMTP_PASSWORD"}])
    channel_secrets_checked(cfg, {"TEST_HOOK_SECRET": "q8Jd2-kLm3Zr9xWv", "TEST_SMTP_PASSWORD": "s3cr1t"})
    with pytest.raises(SettingsError) as err:
        channel_secrets_checked(cfg, {"TEST_HOOK_SECRET": "CHANGE-ME-please-0123"})
    assert "TEST_HOOK_SECRET" in str(err.value) and "CHANGE-ME-please" not in str(err.value)
    with pytest.raises(SettingsError, match="TEST_SMTP_PASSWORD"):
        channel_secrets_checked(cfg, {"TEST_SMTP_PASSWORD": "example"})
