"""ingest settings (``LIFELINE_INGEST_*`` plus the shared MQTT, Kafka and registry groups)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.core.settings import KafkaSettings, MqttSettings, RegistrySettings, _Group, load


class IngestSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_INGEST_", extra="ignore", frozen=True)

    client_id: str | None = Field(default=None, description=(
        "MQTT client id; default: ingest's MQTT username. The broker keys the persistent "
        "session by it, and a broker with use_username_as_clientid (the local stack) "
        "replaces it by the username anyway: keep the two equal."))
    max_payload_bytes: int = Field(default=65536, ge=256)
    max_future_s: float = Field(default=300.0, ge=0,
                                description="Readings further ahead of ingest's clock are refused.")
    max_past_s: float = Field(default=7 * 86400.0, gt=0,
                              description="Readings older than this are refused.")
    gateway_rate_per_s: float = Field(default=20.0, gt=0, description=(
        "Messages per second one gateway (facility) may send on average."))
    gateway_burst: float = Field(default=1000.0, ge=1, description=(
        "Messages one gateway may send at once beside its rate."))
    gateway_hard_rate_per_s: float = Field(default=500.0, gt=0, description=(
        "Hard cap per gateway, backlog or not (never below gateway_rate_per_s)."))
    gateway_hard_burst: float = Field(default=20000.0, ge=1, description=(
        "Burst of the hard cap (never below gateway_burst): two weeks of one report a "
        "minute at once."))
    backlog_min_age_s: float = Field(default=60.0, ge=0, description=(
        "A report older than this, later than the gateway's previous backlog report, is "
        "a store-and-forward backlog: admitted beside the rate (services/ingest/ratelimit.py)."))
    backlog_min_spacing_s: float = Field(default=1.0, gt=0, description=(
        "Event time between two backlog reports of one gateway, at least."))
    max_pending: int = Field(default=5000, ge=1, description=(
        "Messages held unacknowledged (validated, waiting for Kafka) at most; beyond it "
        "ingest stops reading MQTT until Kafka catches up (backpressure). Above the "
        "broker's in-flight window, so it never slows a working pipeline."))
    max_pending_bytes: int = Field(default=64 << 20, ge=65536, description=(
        "Payload bytes held unacknowledged at most (the same backpressure)."))
    ack_stall_s: float = Field(default=10.0, gt=0, description=(
        "When the oldest message has waited this long for Kafka, health reports the "
        "problem `kafka` (503)."))
    pack_ms: float = Field(default=0.0, ge=0, le=1000, description=(
        "Hold accepted reports up to this long and write those of one partition as one "
        "lifeline.readings record (one batch per line, services/ingest/pack.py); 0 = one "
        "record per report. Fewer records cost the broker and the consumers less."))
    pack_max_reports: int = Field(default=500, ge=1, description=(
        "A pack is written at once when it holds this many reports."))
    pack_max_bytes: int = Field(default=262144, ge=1024, description=(
        "A pack is written before it would pass this size (below the broker's "
        "message.max.bytes; a single larger report is written alone)."))
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
