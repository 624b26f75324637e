"""Producer batching and checkpoint pacing follow the broker flavour unless set."""

from __future__ import annotations

import pytest

from services.core.kafka import producer_kwargs
from services.core.settings import KafkaSettings
from services.processor.config import ProcessorSettings


@pytest.mark.parametrize(("flavor", "linger", "checkpoints"), [("tansu", 2, 150.0),
                                                                ("kafka", 20, 1000.0)])
def test_defaults_by_flavor(monkeypatch: pytest.MonkeyPatch, flavor: str, linger: int,
                            checkpoints: float) -> None:
    monkeypatch.delenv("LIFELINE_KAFKA_LINGER_MS", raising=False)
    monkeypatch.delenv("LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S", raising=False)
    kafka = KafkaSettings(flavor=flavor)
    kw = producer_kwargs(kafka, "x")
    assert kw["linger_ms"] == linger and kw["max_batch_size"] == 256 << 10
    assert ProcessorSettings().checkpoint_rate(flavor) == checkpoints


def test_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFELINE_KAFKA_LINGER_MS", "5")
    monkeypatch.setenv("LIFELINE_PROCESSOR_MAX_CHECKPOINTS_PER_S", "40")
    assert producer_kwargs(KafkaSettings(), "x")["linger_ms"] == 5
    assert ProcessorSettings().checkpoint_rate("tansu") == 40.0
    monkeypatch.setenv("LIFELINE_KAFKA_LINGER_MS", "5000")
    with pytest.raises(ValueError, match="linger_ms"):
        KafkaSettings()
