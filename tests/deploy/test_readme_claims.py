"""The README says what the code does: every environment variable a settings class reads is
in its configuration table, and the example district's counts are what the registry has.

The table writes related variables compactly — `` `LIFELINE_INGEST_GATEWAY_RATE_PER_S` /
`_GATEWAY_BURST` `` — so a suffix in a row stands for any prefix of that row's full names
followed by the suffix."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from pydantic_settings import BaseSettings

from schemas.registry import Registry
from services.core import settings as core_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONFIG_MODULES = ["services.core.settings", "services.ingest.config", "services.processor.config",
                  "services.writer.config", "services.notifier.config", "services.orders.config",
                  "services.stack.manager", "services.cli"]


def settings_classes() -> list[type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    for name in CONFIG_MODULES:
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if (isinstance(obj, type) and issubclass(obj, BaseSettings)
                    and obj.model_config.get("env_prefix")):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def env_vars(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix"))
    out = set()
    for name, field in cls.model_fields.items():
        alias = field.validation_alias or field.alias
        out.add(alias.upper() if isinstance(alias, str) else (prefix + name).upper())
    return out


def documented() -> set[str]:
    names: set[str] = set()
    for line in README.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        full = re.findall(r"`(LIFELINE_[A-Z0-9_]+)`", cell)
        suffixes = re.findall(r"`(_[A-Z0-9_]+)`", cell)
        names.update(full)
        for f in full:
            parts = f.split("_")
            for i in range(2, len(parts)):
                names.update("_".join(parts[:i]) + s for s in suffixes)
    return names


def test_the_settings_classes_are_found() -> None:
    classes = settings_classes()
    assert core_settings.KafkaSettings in classes and len(classes) >= 9


def test_every_environment_variable_is_in_the_readme() -> None:
    doc = documented()
    missing = sorted(v for cls in settings_classes() for v in env_vars(cls) if v not in doc)
    assert missing == [], f"README configuration table lacks: {missing}"


def test_the_example_district_counts_are_the_registrys(registry: Registry) -> None:
    m = re.search(r"example district: (\d+) facilities and (\d+) sensors", README)
    assert m, "README no longer states the example district's counts"
    assert (int(m[1]), int(m[2])) == (len(registry.facilities), registry.sensor_count)


# Read with os.environ, not through a settings class.
PLAIN_ENV = {"LIFELINE_STATE_DIR", "LIFELINE_DEBUG", "LIFELINE_LONG_TESTS", "LIFELINE_CRASH_AT"}


def cli_env_vars() -> set[str]:
    return {v for path in (ROOT / "services").rglob("*.py")
            for v in re.findall(r'envvar="(LIFELINE_[A-Z0-9_]+)"', path.read_text())}


def test_every_variable_in_the_readme_table_exists() -> None:
    real = {v for cls in settings_classes() for v in env_vars(cls)} | PLAIN_ENV | cli_env_vars()
    stale = sorted(v for line in README.splitlines() if line.startswith("| `")
                   for v in re.findall(r"`(LIFELINE_[A-Z0-9_]+)`", line.split("|")[1])
                   if v not in real)
    assert stale == [], f"README documents variables nothing reads: {stale}"


def test_every_cli_environment_variable_is_in_the_readme() -> None:
    """Options that read a LIFELINE_ variable (``envvar=``) are configuration too."""
    doc = documented()
    found = cli_env_vars()
    assert found, "no CLI option reads an environment variable any more?"
    assert sorted(found - doc) == []


def test_the_layout_names_every_package_and_docs_page() -> None:
    """The README's Layout block names every package under schemas/, services/ and
    simulators/, and every page in docs/."""
    block = README.split("## Layout", 1)[1].split("```", 2)[1]
    packages = [p.parent.name for top in ("services", "simulators")
                for p in (ROOT / top).glob("*/__init__.py")]
    modules = [p.stem for p in (ROOT / "schemas").glob("*.py") if p.stem != "__init__"]
    pages = [p.name for p in (ROOT / "docs").glob("*.md")]
    missing = [n for n in packages + pages if f"{n}" not in block]
    missing += [m for m in modules if m not in block]
    assert missing == [], f"README layout does not name: {missing}"
