"""processor settings (``LIFELINE_PROCESSOR_*`` plus Kafka and registry groups)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.core.settings import KafkaSettings, RegistrySettings, _Group, load


class ProcessorSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_PROCESSOR_", extra="ignore",
                                      frozen=True)

    health_host: str = "127.0.0.1"
    health_port: int = 18082
    tick_interval_s: float = Field(default=5.0, gt=0,
                                   description="How often the gateway-offline check runs.")
    max_lag_for_ticks: int = Field(
        default=200, ge=0, description="Gateway-offline checks wait while this many readings "
                                       "events or more are still unprocessed on a partition.")
    max_checkpoints_per_s: float | None = Field(default=None, gt=0, description=(
        "Periodic state checkpoints written per second, fixed (alarm transitions are "
        "always written at once); past it a due checkpoint waits for the next report. "
        "Default: unset — the pace follows the need (every facility in memory saved within "
        "half of checkpoint_interval_s) from 150/s on Tansu (1000 on Kafka) up to "
        "checkpoint_ceiling_per_s."))
    checkpoint_ceiling_per_s: float | None = Field(default=None, gt=0, description=(
        "The most periodic checkpoints per second the adaptive pace may reach. Default: "
        "600 on Tansu, where every table write is its own produce request (measured at "
        "16,000 readings/s: docs/benchmarks.md), 1000 on Kafka."))

    def checkpoint_rate(self, flavor: str) -> float:
        """The pace checkpoints start from (per second): the fixed one when set."""
        if self.max_checkpoints_per_s is not None:
            return self.max_checkpoints_per_s
        return 150.0 if flavor == "tansu" else 1000.0

    def checkpoint_ceiling(self, flavor: str) -> float:
        """The most the pace may reach (per second)."""
        if self.max_checkpoints_per_s is not None:
            return self.max_checkpoints_per_s
        if self.checkpoint_ceiling_per_s is not None:
            return self.checkpoint_ceiling_per_s
        return 600.0 if flavor == "tansu" else 1000.0


class ProcessorConfig:
    def __init__(self) -> None:
        self.processor = load(ProcessorSettings)
        self.kafka = load(KafkaSettings)
        self.common = load(RegistrySettings)
