"""LIFELINE_LOG_LEVEL: a root level, optionally per-logger levels after it."""

from __future__ import annotations

import logging

import pytest

from services.core.logging import configure, logging_config, parse_level


def test_plain_level() -> None:
    assert parse_level("info") == ("INFO", {})
    cfg = logging_config("WARNING")
    assert cfg["root"]["level"] == "WARNING"
    assert cfg["loggers"]["aiokafka"] == {"level": "WARNING"}  # quiet by default


def test_per_logger_levels() -> None:
    spec = "INFO, aiokafka.consumer.fetcher=debug,faust.tables.recovery=DEBUG"
    assert parse_level(spec) == ("INFO", {"aiokafka.consumer.fetcher": "DEBUG",
                                          "faust.tables.recovery": "DEBUG"})
    configure(spec)
    try:
        assert logging.getLogger("aiokafka.consumer.fetcher").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("aiokafka.conn").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("faust.worker").getEffectiveLevel() == logging.INFO
    finally:
        configure("INFO")
        logging.getLogger("aiokafka.consumer.fetcher").setLevel(logging.NOTSET)
        logging.getLogger("faust.tables.recovery").setLevel(logging.NOTSET)


@pytest.mark.parametrize("spec", ["INFO,fetcher", "INFO,=DEBUG"])
def test_malformed_pairs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="logger=LEVEL"):
        parse_level(spec)
