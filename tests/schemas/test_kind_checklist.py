"""The items of docs/contributing.md's "adding a facility kind" checklist that code can check:
every `FacilityKind` has its words, its dashboard, its simulator model and facilities in the
example district. A new kind fails here until each is written."""

from __future__ import annotations

import random

import pytest

from schemas.kinds import FacilityKind, Metric
from schemas.registry import Registry
from schemas.texts import KIND_WORDS, METRIC_WORDS
from services.dashboards.generate import KIND_TITLES
from simulators.facilities import MODELS, model_for


@pytest.mark.parametrize("kind", list(FacilityKind))
def test_every_kind_has_chinese_and_english_words(kind: FacilityKind) -> None:
    words = KIND_WORDS[kind]
    assert words.zh and words.en and words.zh != words.en


@pytest.mark.parametrize("metric", list(Metric))
def test_every_metric_has_chinese_and_english_words(metric: Metric) -> None:
    words = METRIC_WORDS[metric]
    assert words.zh and words.en and words.zh != words.en


@pytest.mark.parametrize("kind", list(FacilityKind))
def test_every_kind_has_a_dashboard(kind: FacilityKind) -> None:
    zh, en = KIND_TITLES[kind]
    assert zh and en


@pytest.mark.parametrize("kind", list(FacilityKind))
def test_every_kind_has_a_simulator_model_and_example_facilities(
        kind: FacilityKind, registry: Registry) -> None:
    assert kind in MODELS
    facilities = [f for f in registry.facilities if f.kind is kind]
    assert facilities, f"the example district has no {kind} facility"
    model = model_for(facilities[0], random.Random(1))
    assert isinstance(model, MODELS[kind])  # type: ignore[arg-type]


@pytest.mark.parametrize("metric", list(Metric))
def test_every_metric_has_a_steady_value_for_lifeline_simulate(metric: Metric) -> None:
    """`lifeline simulate` and `make run` publish every registered sensor (found when the
    new kinds' metrics had none: the steady simulator stopped with a KeyError)."""
    from simulators.basic import NORMAL

    mean, sd, amp = NORMAL[metric]
    assert sd >= 0 and amp >= 0 and mean == mean
