"""writer settings (``LIFELINE_WRITER_*`` plus Kafka, InfluxDB and registry groups)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.core.settings import InfluxSettings, KafkaSettings, RegistrySettings, _Group, load


class WriterSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LIFELINE_WRITER_", extra="ignore", frozen=True)

    health_host: str = "127.0.0.1"
    health_port: int = 18083
    batch_events: int = Field(default=2000, ge=1, description="Kafka events per write, at most.")
    batch_seconds: float = Field(default=0.5, gt=0, description="Longest wait to fill a batch.")
    retry_max_s: float = Field(default=10.0, gt=0, description="Longest pause between retries.")
    timeout_s: float = Field(default=10.0, gt=0, description="HTTP timeout of one write.")
    isolate_max_requests: int = Field(default=200, ge=0, description=(
        "Writes, at most, to isolate the points the database refuses in one batch (halves "
        "written again); what is still refused then is dead-lettered as a whole. 0: a "
        "refused batch is dead-lettered whole."))
    raw_retention: str = Field(default="30d", pattern=r"^(INF|\d+[hdw])$",
                               description="How long raw readings are kept (InfluxDB 1.x).")
    long_retention: str = Field(default="INF", pattern=r"^(INF|\d+[hdw])$",
                                description="How long 1-minute aggregates and alarms are kept.")
    rollup_lateness_s: float = Field(default=60.0, ge=0, le=3600, description=(
        "How late (event time, past the minute's end) a reading may arrive and still be "
        "in its 1-minute aggregate, which the writer writes then (services/writer/"
        "rollup.py)."))
    baseline_warmup_h: float = Field(default=1.0, ge=0, description=(
        "Hours of readings an hour-of-day slot needs before sewage readings carry its "
        "diurnal baseline."))
    rollup_hour_refresh_min: int = Field(default=5, ge=1, le=60, description=(
        "Every how many minutes the hour in progress of each series (reading_1h) and "
        "district (district_1h) is rewritten; a share of the series at each minute. The "
        "hour is written whole once all its minutes are closed (services/writer/rollup.py)."))


class WriterConfig:
    def __init__(self) -> None:
        self.writer = load(WriterSettings)
        self.kafka = load(KafkaSettings)
        self.influx = load(InfluxSettings)
        self.common = load(RegistrySettings)
