"""notifier settings (``LIFELINE_NOTIFIER_*`` plus Kafka, InfluxDB and registry groups)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from services.core.settings import (
    InfluxSettings,
    KafkaSettings,
    RegistrySettings,
    Secret,
    _Group,
    load,
)

DEFAULT_ONCALL = "deploy/oncall/wenzhou-bay.yaml"


class NotifierSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_NOTIFIER_", extra="ignore",
                                      frozen=True)

    oncall: Path = Field(default=Path(DEFAULT_ONCALL),
                         description="The on-call file: people, channels, teams, routes.")
    health_host: str = Field(default="127.0.0.1", description="Health and counters bind here "
                             "(loopback: only the machine's own monitoring reaches them).")
    health_port: int = Field(default=18084, description="Health and counters only (Faust's own "
                                                         "views are off; no acknowledgement page).")
    public_host: str = Field(default="127.0.0.1", description=(
        "The acknowledgement page binds here (behind a reverse proxy with TLS in production: "
        "loopback, or the proxy's network)."))
    public_port: int = Field(default=18085, description=(
        "The acknowledgement page's port: serves /ack/<token> (GET and POST) and nothing else."))
    public_url: str = Field(default="http://127.0.0.1:18085", description=(
        "How recipients reach the acknowledgement page (a reverse proxy with TLS in "
        "production, forwarding to public_host:public_port); links are "
        "<public_url>/ack/<token>."))
    link_secret: Secret = Field(default=SecretStr(""), description=(
        "Signs acknowledgement links, and (through a derived key) every acknowledgement on "
        "lifeline.acks, including `lifeline oncall ack`'s (at least 16 characters; `lifeline "
        "stack up` generates one for the local stack)."))
    link_ttl_s: float = Field(default=86400.0, gt=0, description="How long a link is valid.")
    code_ttl_s: float = Field(default=300.0, gt=0, le=3600, description=(
        "How long a one-time code (links posted in shared channels) is valid."))
    code_attempts: int = Field(default=5, ge=1, le=10,
                               description="Wrong entries allowed per code.")
    code_resend_s: float = Field(default=30.0, ge=0, le=3600, description=(
        "A new code for the same link and person only after this long."))
    code_max_per_link: int = Field(default=5, ge=1, le=50,
                                   description="Codes that may be sent for one link.")
    tick_interval_s: float = Field(default=1.0, gt=0,
                                   description="How often escalation timers are checked.")
    retry_attempts: int = Field(default=3, ge=1, le=10,
                                description="Tries per channel before falling back.")
    retry_backoff_min_s: float = Field(default=0.2, ge=0)
    retry_backoff_max_s: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _ports(self) -> NotifierSettings:
        if self.public_port == self.health_port and self.public_port != 0:
            raise ValueError("LIFELINE_NOTIFIER_PUBLIC_PORT must differ from "
                             "LIFELINE_NOTIFIER_HEALTH_PORT: the acknowledgement page is "
                             "served on a port of its own")
        return self


class NotifierConfig:
    def __init__(self) -> None:
        self.notifier = load(NotifierSettings)
        self.kafka = load(KafkaSettings)
        self.influx = load(InfluxSettings)
        self.common = load(RegistrySettings)
