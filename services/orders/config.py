"""orders settings (``LIFELINE_ORDERS_*``, ``LIFELINE_POSTGRES_*`` plus the shared Kafka and
registry groups)."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from schemas.kinds import AlarmLevel
from schemas.workorder import DeadlinePolicy
from services.core.settings import KafkaSettings, RegistrySettings, Secret, _Group, load


class OrdersSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_ORDERS_", extra="ignore", frozen=True)

    open_from: AlarmLevel = Field(default=AlarmLevel.ORANGE, description=(
        "Facility alarms raised or escalated to this level or worse open a work order "
        "(not suppressed by a fault, not silenced by maintenance)."))
    default_owner_unit: str = Field(default="bureau-duty", min_length=1, max_length=80,
                                    description=(
        "The unit an order goes to when its facility names no owner_unit in the registry "
        "(the bureau's duty desk, which passes it on)."))
    deadlines: DeadlinePolicy = Field(default_factory=DeadlinePolicy, description=(
        "Hours to the deadline per level, with per-kind overrides (JSON: "
        '{"hours": {"red": 2, "orange": 4, "yellow": 24, "blue": 72}, '
        '"by_kind": {"bridge": {"orange": 8}}}).'))
    retry_max_s: float = Field(default=10.0, gt=0, description=(
        "Longest wait between two attempts while PostgreSQL is unavailable (the batch is "
        "retried, never skipped)."))
    health_host: str = "127.0.0.1"
    health_port: int = 18089


class PostgresSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_POSTGRES_", extra="ignore",
                                      frozen=True)

    url: Secret = Field(default=SecretStr(""), description=(
        "PostgreSQL connection URL of the orders store (postgresql://user:password@host:port/"
        "db); `lifeline stack up` writes the local one to stack.env."))

    @model_validator(mode="after")
    def _required(self) -> PostgresSettings:
        if not self.url.get_secret_value():
            raise ValueError("LIFELINE_POSTGRES_URL is not set: the work orders need their "
                             "PostgreSQL (`lifeline stack up` starts one and writes it)")
        return self


class OrdersConfig:
    """Everything the orders service reads at start-up, validated together."""

    def __init__(self) -> None:
        self.orders = load(OrdersSettings)
        self.postgres = load(PostgresSettings)
        self.kafka = load(KafkaSettings)
        self.common = load(RegistrySettings)
