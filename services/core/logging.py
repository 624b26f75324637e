"""Structured logging: one JSON object per line, on stderr.

Lifeline's own events and every library's stdlib log records (Faust, aiokafka, paho) go
through the same structlog renderer, so an operator can grep or ship one format.
Secrets are never passed to log calls; ``SecretStr`` renders as ``**********`` anyway.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def parse_level(spec: str) -> tuple[str, dict[str, str]]:
    """``LIFELINE_LOG_LEVEL``: the root level, then optional ``logger=LEVEL`` pairs,
    comma-separated (``INFO,aiokafka.consumer.fetcher=DEBUG``) to look into one library
    without drowning in the others."""
    root, *pairs = [p.strip() for p in spec.split(",") if p.strip()] or ["INFO"]
    loggers: dict[str, str] = {}
    for pair in pairs:
        name, sep, lvl = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"log level {pair!r}: expected logger=LEVEL")
        loggers[name.strip()] = lvl.strip().upper()
    return root.upper(), loggers


def logging_config(spec: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` that renders every record as one JSON line."""
    level, per_logger = parse_level(spec)
    loggers: dict[str, Any] = {
        # aiokafka logs every retried connection at ERROR during a broker restart; the
        # services log their own summarised view of that.
        "aiokafka": {"level": "WARNING"},
    }
    loggers.update({name: {"level": lvl} for name, lvl in per_logger.items()})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    structlog.processors.JSONRenderer(ensure_ascii=False),
                ],
                "foreign_pre_chain": _SHARED,
            }
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json",
                        "stream": "ext://sys.stderr"},
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": loggers,
    }


def configure(level: str = "INFO", service: str | None = None) -> None:
    """Configure stdlib logging and structlog for a service process."""
    logging.config.dictConfig(logging_config(level))
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # stderr is a TextIOWrapper


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
