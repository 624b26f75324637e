"""orders settings (``LIFELINE_ORDERS_*``, ``LIFELINE_POSTGRES_*`` plus the shared Kafka and
registry groups)."""

from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from schemas.kinds import AlarmLevel
from schemas.workorder import DeadlinePolicy
from services.core.settings import (
    InfluxSettings,
    KafkaSettings,
    RegistrySettings,
    Secret,
    _Group,
    load,
)


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
    oncall: Path = Field(default=Path("deploy/oncall/wenzhou-bay.yaml"), description=(
        "The on-call file: its `units` (each owner unit's contact and manager) and `orders` "
        "(the section chief) say who is dispatched and escalated to, on which channels "
        "(the notifier's; their secrets from the same environment variables)."))
    auto_dispatch: bool = Field(default=True, description=(
        "Dispatch a new order at once to its unit's contact when the on-call file has the "
        "unit (false: an analyst dispatches each one)."))
    tick_s: float = Field(default=15.0, gt=0, le=3600, description=(
        "How often overdue orders are escalated (督办) and pending messages sent."))
    public_host: str = Field(default="127.0.0.1", description=(
        "The order page binds here (behind a TLS reverse proxy in production)."))
    public_port: int = Field(default=18090, description=(
        "The order page's port: /order/<token> and nothing else."))
    public_url: str = Field(default="http://127.0.0.1:18090", description=(
        "How recipients reach the order page; links are <public_url>/order/<token>."))
    link_secret: Secret = Field(default=SecretStr(""), description=(
        "Signs order-page links (at least 16 characters; `lifeline stack up` generates one "
        "for the local stack)."))
    link_ttl_s: float = Field(default=7 * 86400.0, gt=0, description=(
        "How long an order-page link is valid."))
    upload_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024,
                                  description="Largest photo accepted from the order page.")
    upload_max_files: int = Field(default=6, ge=1, le=10,
                                  description="Photos per report (one step).")
    notice_attempts: int = Field(default=5, ge=1, le=50, description=(
        "Tries of a message (every channel each time) before it is recorded as failed."))
    notice_backoff_s: float = Field(default=30.0, gt=0, le=3600,
                                    description="Wait between two tries of a message.")
    false_alarm_limit: int = Field(default=3, ge=1, le=1000, description=(
        "False alarms of one sensor in 30 days that make it suspect: a health warning naming "
        "it, and its count shown on its next orders' page (its alarms are never muted)."))
    reports_dir: Path | None = Field(default=None, description=(
        "Where the daily report (日报, every day for the day before) and the weekly report "
        "(周报, on Mondays for the week before) are written on schedule; unset: on demand "
        "only (`lifeline report`)."))
    reports_after: time = Field(default=time(0, 30), description=(
        "Local time (the on-call file's zone) after which the day's scheduled reports are "
        "made."))
    health_host: str = "127.0.0.1"
    health_port: int = 18089

    @model_validator(mode="after")
    def _ports(self) -> OrdersSettings:
        if self.public_port == self.health_port and self.public_port != 0:
            raise ValueError("LIFELINE_ORDERS_PUBLIC_PORT must differ from "
                             "LIFELINE_ORDERS_HEALTH_PORT: the order page has a port of its own")
        return self


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
        self.influx = load(InfluxSettings)  # the scheduled reports read alarms and readings
