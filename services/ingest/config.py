"""ingest settings (``LIFELINE_INGEST_*`` plus the shared MQTT, Kafka and registry groups)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.core.settings import KafkaSettings, MqttSettings, RegistrySettings, _Group, load


class IngestSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_INGEST_", extra="ignore", frozen=True)

    client_id: str = Field(default="lifeline-ingest",
                           description="MQTT client id; the persistent session is keyed by it.")
    max_payload_bytes: int = Field(default=65536, ge=256)
    max_future_s: float = Field(default=300.0, ge=0,
                                description="Readings further ahead of ingest's clock are refused.")
    max_past_s: float = Field(default=7 * 86400.0, gt=0,
                              description="Readings older than this are refused.")
    gateway_rate_per_s: float = Field(default=20.0, gt=0, description=(
        "Messages per second one gateway (facility) may send on average."))
    gateway_burst: float = Field(default=1000.0, ge=1, description=(
        "Messages one gateway may send at once (a store-and-forward backlog after an outage)."))
    ack_stall_s: float = Field(default=10.0, gt=0, description=(
        "Health turns degraded when the oldest message has waited this long for Kafka."))
    health_host: str = "127.0.0.1"
    health_port: int = 18081
    drain_timeout_s: float = 10.0


class IngestConfig:
    """Everything ingest reads at start-up, validated together."""

    def __init__(self) -> None:
        self.ingest = load(IngestSettings)
        self.mqtt = load(MqttSettings)
        self.kafka = load(KafkaSettings)
        self.common = load(RegistrySettings)
