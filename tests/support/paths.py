"""Paths the tests share: the repository and the example district's registry and on-call file."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_REGISTRY = ROOT / "deploy" / "registry" / "wenzhou-bay.yaml"
EXAMPLE_ONCALL = ROOT / "deploy" / "oncall" / "wenzhou-bay.yaml"
