"""Configuration groups, read from environment variables by pydantic-settings.

Each group has its own prefix (``LIFELINE_KAFKA_``, ``LIFELINE_MQTT_``, …); a service's
settings class composes the groups it needs. ``lifeline stack up`` writes the local
stack's connection settings to ``<state>/stack.env``, which is read as a fallback after
the real environment, so commands find the local stack without any export.

Secrets are :data:`Secret` (a ``SecretStr`` that refuses placeholders, published example
values and short strings) and :func:`load` turns a refused configuration into one line per
setting, naming the environment variable and never the value (:class:`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR_ENV = "LIFELINE_STATE_DIR"
DEFAULT_REGISTRY = "deploy/registry/wenzhou-bay.yaml"


def state_dir() -> Path:
    """The local stack's state folder (``LIFELINE_STATE_DIR``, default ``.lifeline``)."""
    # The one place the environment is read directly: it locates the env file itself.
    return Path(os.environ.get(STATE_DIR_ENV, ".lifeline")).resolve()


def stack_env_file() -> Path:
    return state_dir() / "stack.env"


# --------------------------------------------------------------------------- secrets
SECRET_MIN_LENGTH = 16
SECRET_MIN_DISTINCT = 6
# Lower-case fragments that mark a value somebody was meant to replace.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "change_me", "replace-me", "replaceme",
                       "replace_me", "placeholder", "example", "<secret>", "your-secret",
                       "your_secret", "insert-", "fixme")
# Exact values (compared case-insensitively) that are published and therefore not secret:
# every secret in .env.example and deploy/lifeline.production.env (tests/core/test_secrets.py
# keeps this list and those files in step) and well-known examples from upstream docs.
KNOWN_EXAMPLE_VALUES = frozenset(v.lower() for v in (
    # .env.example
    "CHANGE-ME-ingest", "CHANGE-ME-simulator", "CHANGE-ME-at-least-8-chars",
    "CHANGE-ME-long-random-token", "CHANGE-ME-grafana", "CHANGE-ME-at-least-16-random-characters",
    "CHANGE-ME-kafka-admin", "CHANGE-ME-kafka-ingest", "CHANGE-ME-kafka-processor",
    "CHANGE-ME-kafka-writer", "CHANGE-ME-kafka-notifier", "CHANGE-ME-kafka-controller",
    "CHANGE-ME-kafka-orders", "CHANGE-ME-postgres", "CHANGE-ME-postgres-admin",
    "CHANGE-ME-postgres-reader", "CHANGE-ME-another-16-random-characters",
    # upstream documentation (InfluxDB, Kafka, Grafana, Java keystores)
    "my-super-secret-auth-token", "my-secret-token", "admin-secret", "alice-secret",
    "changeit", "password", "secret", "admin", "grafana", "influxdb", "mosquitto",
    "lifeline", "supersecret", "s3cr3t", "passw0rd", "password123", "12345678",
    "1234567890123456", "0123456789abcdef",
))


class SettingsError(SystemExit):
    """A configuration Lifeline refuses to start with: one line per setting, naming the
    environment variable and the reason, never the value. A ``SystemExit``: raised at
    start-up it prints the lines and exits with status 1, without a traceback."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(f"lifeline: refusing to start: {line}" for line in lines))


def secret_problem(value: str) -> str | None:
    """Why ``value`` is not acceptable as a secret (``None`` when it is). Never echoes it."""
    low = value.strip().lower()
    if low in KNOWN_EXAMPLE_VALUES:
        return "a published example value, not a secret; set a value of your own"
    marker = next((m for m in PLACEHOLDER_MARKERS if m in low), None)
    if marker is not None:
        return f"a placeholder (contains {marker!r}); set a real secret"
    if len(value) < SECRET_MIN_LENGTH:
        return f"shorter than {SECRET_MIN_LENGTH} characters; set a longer random secret"
    if len(set(value)) < SECRET_MIN_DISTINCT:
        return (f"fewer than {SECRET_MIN_DISTINCT} distinct characters; set a random secret "
                "(e.g. `openssl rand -base64 32`)")
    return None


def _validate_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if raw == "":
        return value  # not set: whether it is required is the setting's own rule
    problem = secret_problem(raw)
    if problem is not None:
        raise ValueError(problem)
    return value


Secret = Annotated[SecretStr, AfterValidator(_validate_secret)]
"""A ``SecretStr`` setting that refuses placeholders (CHANGE-ME, example, placeholder …),
the published example values, secrets shorter than 16 characters and strings of very few
distinct characters. An empty value means "not set" and is left to the setting's own rule."""


def check_secret(name: str, value: str) -> None:
    """The same rules for a secret that does not come from a settings class (a command-line
    option): raises ``ValueError`` naming ``name``, never the value. Empty is not checked."""
    problem = secret_problem(value) if value else None
    if problem is not None:
        raise ValueError(f"{name} is refused: {problem}")


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bootstrap_hosts(bootstrap: str) -> list[str]:
    hosts = []
    for item in bootstrap.split(","):
        item = item.strip()
        if item.startswith("["):  # [::1]:9092
            hosts.append(item[1:item.index("]")] if "]" in item else item)
        else:
            hosts.append(item.rsplit(":", 1)[0] if ":" in item else item)
    return hosts


class _Group(BaseSettings):
    # hide_input_in_errors: a refused value never appears in an error message or log.
    model_config = SettingsConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)


class KafkaSettings(_Group):
    """Kafka connection. ``flavor=tansu`` turns on the local broker's workarounds only.

    Authentication is configuration only (the same code for every client, aiokafka and
    Faust): ``security_protocol=SASL_SSL`` with ``sasl_mechanism=SCRAM-SHA-512``, the
    service's own ``sasl_username``/``sasl_password`` and the broker's CA (``ca_file``;
    default: the system's CAs). The broker's certificate is always verified, host name
    included; a client certificate (``cert_file`` + ``key_file``) is optional."""

    model_config = SettingsConfigDict(env_prefix="LIFELINE_KAFKA_", extra="ignore", frozen=True)

    bootstrap: str = "127.0.0.1:19092"
    flavor: Literal["tansu", "kafka"] = "tansu"
    partitions: int = Field(default=4, ge=1)
    replication: int = Field(default=1, ge=1)
    linger_ms: int | None = Field(default=None, ge=0, le=1000, description=(
        "How long ingest's producer waits to fill a batch (default 2 ms on Tansu, 20 ms on "
        "Kafka). On Tansu every batch is an object that each fetch scans: sustained high "
        "rates need 100 (what `lifeline bench` uses)."))
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT only for the local broker (Tansu on "
        "loopback); production: SASL_SSL.")
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = Field(default=None, description="This service's own Kafka "
                                      "principal (one per service, each with its ACLs).")
    sasl_password: Secret | None = None
    ca_file: Path | None = Field(default=None, description="CA of the brokers' certificates "
                                 "(PEM; default: the system's CAs).")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM, "
                                   "mutual TLS), with key_file.")
    key_file: Path | None = None
    allow_plaintext: bool = Field(default=False, description=(
        "Allow a non-TLS connection to a broker that is not on loopback (a test broker; "
        "never in production)."))

    @property
    def producer_linger_ms(self) -> int:
        if self.linger_ms is not None:
            return self.linger_ms
        return 2 if self.flavor == "tansu" else 20

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _coherent_security(self) -> KafkaSettings:
        p = "LIFELINE_KAFKA_"
        proto = f"{p}SECURITY_PROTOCOL={self.security_protocol}"
        password = self.sasl_password.get_secret_value() if self.sasl_password else ""
        if self.uses_sasl and (not self.sasl_username or not password):
            raise ValueError(f"{p}SASL_USERNAME and {p}SASL_PASSWORD are required with {proto}")
        if not self.uses_sasl and (self.sasl_username or password):
            raise ValueError(f"{p}SASL_USERNAME/{p}SASL_PASSWORD are set but {proto} does "
                             "not authenticate with them; use SASL_SSL")
        if self.security_protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise ValueError(f"{p}SASL_MECHANISM=PLAIN over SASL_PLAINTEXT sends the password "
                             "in the clear; use SASL_SSL")
        if not self.uses_tls:
            remote = [h for h in _bootstrap_hosts(self.bootstrap) if not _is_loopback(h)]
            if remote and not self.allow_plaintext:
                raise ValueError(f"{proto} to a broker that is not on loopback sends every "
                                 f"record unencrypted; use SASL_SSL (or set "
                                 f"{p}ALLOW_PLAINTEXT=true for a test broker)")
            for name in ("ca_file", "cert_file", "key_file"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{p}{name.upper()} is set but {proto} does not use TLS")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(f"{p}CERT_FILE and {p}KEY_FILE go together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{p}{name.upper()}: no such file")
        return self


class MqttSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_MQTT_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 11883
    username: str = "lifeline-ingest"
    password: Secret = SecretStr("")
    keepalive: int = Field(default=30, ge=5)
    tls: bool = Field(default=False, description="Connect with TLS (production: port 8883).")
    ca_file: Path | None = Field(default=None, description="CA of the broker's certificate "
                                 "(default: the system's CAs). The certificate is always "
                                 "verified, host name included.")
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual "
                                   "TLS), with key_file.")
    key_file: Path | None = None
    allow_plaintext: bool = Field(default=False, description=(
        "Allow a password over plain MQTT to a broker that is not on loopback (a test "
        "broker; never in production)."))

    @model_validator(mode="after")
    def _no_password_in_the_clear(self) -> MqttSettings:
        if (not self.tls and self.password.get_secret_value() and not self.allow_plaintext
                and not _is_loopback(self.host)):
            raise ValueError("LIFELINE_MQTT_TLS=false to a broker that is not on loopback "
                             "sends the password in the clear; set LIFELINE_MQTT_TLS=true "
                             "(port 8883), or LIFELINE_MQTT_ALLOW_PLAINTEXT=true for a test "
                             "broker")
        return self


class InfluxSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_INFLUX_", extra="ignore", frozen=True)

    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:18086"
    database: str = "lifeline"
    username: str | None = None
    password: Secret | None = None
    token: Secret | None = Field(default=None, description=(
        "InfluxDB 2.x API token of this service (docker-compose: one per service, with only "
        "the permissions it needs; read from token_file)."))
    token_file: Path | None = Field(default=None, description=(
        "File holding the token (instead of token): what deploy/influxdb/20-tokens.sh "
        "writes for each service."))
    org: str | None = None
    bucket: str | None = None
    long_bucket: str | None = Field(default=None, description=(
        "InfluxDB 2.x bucket for alarms, the on-call trail and 1-minute aggregates "
        "(InfluxQL retention policy 'long'); default: <bucket>_long."))

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("token_file"):
            return data
        if data.get("token"):
            raise ValueError("set LIFELINE_INFLUX_TOKEN or LIFELINE_INFLUX_TOKEN_FILE, not both")
        try:
            text = Path(data["token_file"]).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"LIFELINE_INFLUX_TOKEN_FILE: cannot read it "
                             f"({type(exc).__name__})") from None
        if not text:
            raise ValueError("LIFELINE_INFLUX_TOKEN_FILE: the file is empty")
        return {**data, "token": text}

    @property
    def long_bucket_name(self) -> str:
        return self.long_bucket or f"{self.bucket}_long"


class RegistrySettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_", extra="ignore", frozen=True)

    registry: Path = Path(DEFAULT_REGISTRY)
    log_level: str = "INFO"
    health_report_s: float = Field(default=10.0, gt=0, description=(
        "How often each service publishes its counters to lifeline.health."))
    reload_check_s: float = Field(default=5.0, gt=0, description=(
        "How often every service checks the registry and the on-call file for changes "
        "(a changed file is validated, then used without a restart; services/core/reload.py)."))


S = TypeVar("S", bound=BaseSettings)


def describe_errors(cls: type[BaseSettings], exc: ValidationError) -> list[str]:
    """One line per refused setting: the environment variable and the reason, no value."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        reason = str(ctx_error) if ctx_error is not None else str(err["msg"])
        loc = [str(part) for part in err["loc"] if isinstance(part, str)]
        if loc:
            lines.append(f"{(prefix + loc[0]).upper()}: {reason}")
        else:
            lines.append(reason)  # model-level rules name their variables themselves
    return lines


def load(cls: type[S], **overrides: Any) -> S:
    """Instantiate a settings class: environment first, then ``<state>/stack.env``.

    A refused configuration raises :class:`SettingsError` (one line per setting)."""
    env_file = stack_env_file()
    try:
        if env_file.exists():
            return cls(_env_file=env_file, **overrides)
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_errors(cls, exc)) from None
