"""One base exception: every exception class defined in schemas/, services/ and simulators/
derives from LifelineError — except SettingsError, a SystemExit on purpose (schemas/errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import schemas
import services
import simulators
from schemas.errors import LifelineError
from services.core.errors import LifelineError as CoreLifelineError

ALLOWED = {"services.core.settings.SettingsError"}


def _modules() -> list[str]:
    names = []
    for pkg in (schemas, services, simulators):
        path = [str(Path(pkg.__file__).parent)]  # type: ignore[arg-type]
        names += [m.name for m in pkgutil.walk_packages(path, prefix=f"{pkg.__name__}.")]
    return names


def test_one_base() -> None:
    assert CoreLifelineError is LifelineError
    found, stray = [], []
    for name in _modules():
        mod = importlib.import_module(name)
        for _, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            qual = f"{name}.{cls.__name__}"
            found.append(qual)
            if not issubclass(cls, LifelineError) and qual not in ALLOWED:
                stray.append(qual)
    assert len(found) >= 15, found
    assert stray == [], f"exceptions not deriving from LifelineError: {stray}"
