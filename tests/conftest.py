"""Shared fixtures. Unit tests need nothing; integration fixtures live in
tests/integration/conftest.py and start the real local stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from schemas.registry import Registry, load_registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REGISTRY = ROOT / "deploy" / "registry" / "wenzhou-bay.yaml"


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(EXAMPLE_REGISTRY)


LONG_TESTS = os.environ.get("LIFELINE_LONG_TESTS") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tier follows the folder, so no test can forget its marker. Tests marked `long`
    # (long scenario runs) run on demand: `make long` (LIFELINE_LONG_TESTS=1).
    skip_long = pytest.mark.skip(reason="long: run on demand with `make long`")
    for item in items:
        if item.get_closest_marker("long") and not LONG_TESTS:
            item.add_marker(skip_long)
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/bench/" in path:
            item.add_marker(pytest.mark.bench)
        else:
            item.add_marker(pytest.mark.unit)
