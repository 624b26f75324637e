"""Configuration groups, read from environment variables by pydantic-settings.

Each group has its own prefix (``LIFELINE_KAFKA_``, ``LIFELINE_MQTT_``, …); a service's
settings class composes the groups it needs. ``lifeline stack up`` writes the local
stack's connection settings to ``<state>/stack.env``, which is read as a fallback after
the real environment, so commands find the local stack without any export.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STATE_DIR_ENV = "LIFELINE_STATE_DIR"
DEFAULT_REGISTRY = "deploy/registry/wenzhou-bay.yaml"


def state_dir() -> Path:
    """The local stack's state folder (``LIFELINE_STATE_DIR``, default ``.lifeline``)."""
    # The one place the environment is read directly: it locates the env file itself.
    return Path(os.environ.get(STATE_DIR_ENV, ".lifeline")).resolve()


def stack_env_file() -> Path:
    return state_dir() / "stack.env"


class _Group(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)


class KafkaSettings(_Group):
    """Kafka connection. ``flavor=tansu`` turns on the local broker's workarounds only."""

    model_config = SettingsConfigDict(env_prefix="LIFELINE_KAFKA_", extra="ignore", frozen=True)

    bootstrap: str = "127.0.0.1:19092"
    flavor: Literal["tansu", "kafka"] = "tansu"
    partitions: int = Field(default=4, ge=1)
    replication: int = Field(default=1, ge=1)
    linger_ms: int | None = Field(default=None, ge=0, le=1000, description=(
        "How long ingest's producer waits to fill a batch (default 2 ms on Tansu, 20 ms on "
        "Kafka). On Tansu every batch is an object that each fetch scans: sustained high "
        "rates need 100 (what `lifeline bench` uses)."))
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


    @property
    def producer_linger_ms(self) -> int:
        if self.linger_ms is not None:
            return self.linger_ms
        return 2 if self.flavor == "tansu" else 20


class MqttSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_MQTT_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 11883
    username: str = "lifeline-ingest"
    password: SecretStr = SecretStr("")
    keepalive: int = Field(default=30, ge=5)
    tls: bool = Field(default=False, description="Connect with TLS (production: port 8883).")
    ca_file: Path | None = Field(default=None, description="CA of the broker's certificate "
                                 "(default: the system's CAs). The certificate is always "
                                 "verified, host name included.")
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual "
                                   "TLS), with key_file.")
    key_file: Path | None = None


class InfluxSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_INFLUX_", extra="ignore", frozen=True)

    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:18086"
    database: str = "lifeline"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    long_bucket: str | None = Field(default=None, description=(
        "InfluxDB 2.x bucket for alarms, the on-call trail and 1-minute aggregates "
        "(InfluxQL retention policy 'long'); default: <bucket>_long."))

    @property
    def long_bucket_name(self) -> str:
        return self.long_bucket or f"{self.bucket}_long"


class RegistrySettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_", extra="ignore", frozen=True)

    registry: Path = Path(DEFAULT_REGISTRY)
    log_level: str = "INFO"
    health_report_s: float = Field(default=10.0, gt=0, description=(
        "How often each service publishes its counters to lifeline.health."))


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **overrides: Any) -> S:
    """Instantiate a settings class: environment first, then ``<state>/stack.env``."""
    env_file = stack_env_file()
    if env_file.exists():
        return cls(_env_file=env_file, **overrides)
    return cls(**overrides)
