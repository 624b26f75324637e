"""Export the contracts as JSON Schema (for device vendors and other consumers)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.alarm import AlarmEvent
from schemas.deadletter import DeadLetter
from schemas.oncall import AckRequest, OnCallConfig, OnCallRecord
from schemas.reading import ReadingBatch
from schemas.registry import Registry
from schemas.telemetry import TelemetryMessage
from schemas.workorder import OrderEvent, WorkOrder

EXPORTS: dict[str, type[BaseModel]] = {
    "telemetry.schema.json": TelemetryMessage,
    "reading-batch.schema.json": ReadingBatch,
    "alarm-event.schema.json": AlarmEvent,
    "dead-letter.schema.json": DeadLetter,
    "registry.schema.json": Registry,
    "oncall.schema.json": OnCallConfig,
    "ack-request.schema.json": AckRequest,
    "oncall-record.schema.json": OnCallRecord,
    "order-event.schema.json": OrderEvent,
    "work-order.schema.json": WorkOrder,
}


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def export_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTS.items():
        path = out / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written
