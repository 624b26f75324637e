"""processor settings (``LIFELINE_PROCESSOR_*`` plus Kafka and registry groups)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.core.settings import KafkaSettings, RegistrySettings, _Group, load


class ProcessorSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_PROCESSOR_", extra="ignore",
                                      frozen=True)

    health_host: str = "127.0.0.1"
    health_port: int = 18082


class ProcessorConfig:
    def __init__(self) -> None:
        self.processor = load(ProcessorSettings)
        self.kafka = load(KafkaSettings)
        self.common = load(RegistrySettings)
