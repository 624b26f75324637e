"""notifier settings (``LIFELINE_NOTIFIER_*`` plus Kafka, InfluxDB and registry groups)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.core.settings import InfluxSettings, KafkaSettings, RegistrySettings, _Group, load

DEFAULT_ONCALL = "deploy/oncall/wenzhou-bay.yaml"


class NotifierSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_NOTIFIER_", extra="ignore",
                                      frozen=True)

    oncall: Path = Field(default=Path(DEFAULT_ONCALL),
                         description="The on-call file: people, channels, teams, routes.")
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=18084, description="Health, counters and the "
                                                         "acknowledgement page.")
    public_url: str = Field(default="http://127.0.0.1:18084", description=(
        "How recipients reach the acknowledgement page (a reverse proxy with TLS in "
        "production); links are <public_url>/ack/<token>."))
    link_secret: SecretStr = Field(default=SecretStr(""), description=(
        "Signs acknowledgement links (at least 16 characters; `lifeline stack up` generates "
        "one for the local stack)."))
    link_ttl_s: float = Field(default=86400.0, gt=0, description="How long a link is valid.")
    tick_interval_s: float = Field(default=1.0, gt=0,
                                   description="How often escalation timers are checked.")
    retry_attempts: int = Field(default=3, ge=1, le=10,
                                description="Tries per channel before falling back.")
    retry_backoff_min_s: float = Field(default=0.2, ge=0)
    retry_backoff_max_s: float = Field(default=5.0, gt=0)


class NotifierConfig:
    def __init__(self) -> None:
        self.notifier = load(NotifierSettings)
        self.kafka = load(KafkaSettings)
        self.influx = load(InfluxSettings)
        self.common = load(RegistrySettings)
