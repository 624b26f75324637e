"""Supply chain: exact pins, the maintained Grafana client, and the pip-audit step of the
test command (deploy/audit_dependencies.py) — fails on a known vulnerability, says plainly
that it skipped when no vulnerability source can be reached (as here)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import stat
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
        pins[_norm(name)] = version
    return pins


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0])


def test_constraints_pin_exactly_what_the_project_depends_on() -> None:
    pins = _constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    missing = {_requirement_name(d) for d in deps} - set(pins)
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_grafana_api_is_replaced_by_grafana_client() -> None:
    pins = _constraints()
    assert "grafana-api" not in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_requirement_name(d) for d in project["dependencies"]}
    assert "grafana-client" in names and "grafana-api" not in names
    # The versions tested here are the versions pinned (grafana-client pulls in niquests and
    # urllib3-future, which replaces urllib3's package in site-packages).
    for name in ("grafana-client", "niquests", "urllib3-future", "pip-audit"):
        assert pins[name] == importlib.metadata.version(name), name
    source = (ROOT / "services/dashboards/provision.py").read_text()
    assert "grafana_client" in source and "grafana_api" not in source
    dev = {_requirement_name(d) for d in project["optional-dependencies"]["dev"]}
    assert "pip-audit" in dev


def test_the_test_command_runs_the_audit() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test:(.*)$", makefile, re.MULTILINE)
    assert test_target and "audit" in test_target.group(1).split()
    assert re.search(r"^audit: setup\n\t\.venv/bin/python deploy/audit_dependencies\.py "
                     r"constraints\.txt$", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies",
                                                  ROOT / "deploy" / "audit_dependencies.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["audit_dependencies"] = module
    spec.loader.exec_module(module)
    return module


def _dep(name: str, version: str = "1.0", **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "vulns": [], **extra}


NOT_FOUND = "Dependency not found on PyPI and could not be audited: {} (1.0)"


def test_summary_when_the_source_answers_for_nothing(audit: ModuleType) -> None:
    report = {"dependencies": [{"name": n, "skip_reason": NOT_FOUND.format(n)}
                               for n in ("aiohttp", "faust-streaming")]}
    out = audit.summarize(report)
    assert out.status == 0 and len(out.lines) == 1
    assert out.lines[0].startswith("pip-audit: SKIPPED — the vulnerability source")
    assert "cannot be reached" in out.lines[0] and "0 of 2" in out.lines[0]
    assert audit.summarize(report, strict=True).status == 3


def test_summary_fails_on_a_known_vulnerability(audit: ModuleType) -> None:
    report = {"dependencies": [
        _dep("aiohttp", "3.14.5"),
        _dep("requests", "2.0.0", vulns=[{"id": "PYSEC-2023-74", "fix_versions": ["2.31.0"]},
                                        {"id": "GHSA-x", "fix_versions": []}]),
        {"name": "private-pkg", "skip_reason": NOT_FOUND.format("private-pkg")}]}
    out = audit.summarize(report)
    assert out.status == 1
    assert out.lines == ["pip-audit: VULNERABLE requests==2.0.0: PYSEC-2023-74 (fixed in: 2.31.0)",
                         "pip-audit: VULNERABLE requests==2.0.0: GHSA-x (fixed in: no fixed "
                         "version yet)"]


def test_summary_when_audited(audit: ModuleType) -> None:
    out = audit.summarize({"dependencies": [_dep("aiohttp"), _dep("pint")]})
    assert (out.status, out.lines) == (0, ["pip-audit: OK — 2 pinned packages audited, no "
                                           "known vulnerability"])
    partial = audit.summarize({"dependencies": [_dep("aiohttp"), {
        "name": "private-pkg", "skip_reason": NOT_FOUND.format("private-pkg")}]})
    assert partial.status == 0 and partial.lines[0].endswith("1 not audited: private-pkg")


def _stand_in(tmp_path: Path, body: str) -> str:
    path = tmp_path / "pip-audit"
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_run_reads_pip_audits_report(audit: ModuleType, tmp_path: Path) -> None:
    report = {"dependencies": [_dep("requests", "2.0.0", vulns=[{"id": "PYSEC-1",
                                                               "fix_versions": ["2.31.0"]}])]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    exe = _stand_in(tmp_path, f"""
for ((i=1; i<=$#; i++)); do [ "${{!i}}" = "--output" ] && {{ j=$((i+1)); out=${{!j}}; }}; done
[ "$2" = "{tmp_path / 'constraints.txt'}" ] && [ "$3" = "--no-deps" ] || exit 9
cp {tmp_path}/report.json "$out"; exit 1
""")
    out = audit.run(tmp_path / "constraints.txt", exe)
    assert out.status == 1 and out.lines[0].startswith("pip-audit: VULNERABLE requests==2.0.0")


def test_run_skips_when_the_network_is_unreachable(audit: ModuleType, tmp_path: Path) -> None:
    exe = _stand_in(tmp_path, """echo "requests.exceptions.ConnectionError: HTTPSConnectionPool(\
host='api.osv.dev', port=443): Max retries exceeded (NameResolutionError)" >&2; exit 1
""")
    out = audit.run(tmp_path / "constraints.txt", exe)
    assert out.status == 0 and len(out.lines) == 1
    assert out.lines[0].startswith("pip-audit: SKIPPED — the vulnerability source cannot be "
                                   "reached (")
    assert audit.run(tmp_path / "constraints.txt", exe, strict=True).status == 3


def test_run_fails_when_the_audit_itself_breaks(audit: ModuleType, tmp_path: Path) -> None:
    exe = _stand_in(tmp_path, 'echo "ERROR: invalid requirement: foo bar" >&2; exit 1\n')
    out = audit.run(tmp_path / "constraints.txt", exe)
    assert out.status == 2 and out.lines == ["pip-audit: FAILED — ERROR: invalid requirement: "
                                             "foo bar"]
    missing = audit.run(tmp_path / "constraints.txt", str(tmp_path / "no-such-pip-audit"))
    assert missing.status == 2 and "is not installed" in missing.lines[0]


def test_main_prints_one_line_and_honours_strict(audit: ModuleType, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    report = {"dependencies": [{"name": "x", "skip_reason": NOT_FOUND.format("x")}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    exe = _stand_in(tmp_path, f"""
for ((i=1; i<=$#; i++)); do [ "${{!i}}" = "--output" ] && {{ j=$((i+1)); out=${{!j}}; }}; done
cp {tmp_path}/report.json "$out"
""")
    monkeypatch.delenv("LIFELINE_AUDIT_STRICT", raising=False)
    assert audit.main(["constraints.txt", "--pip-audit", exe]) == 0
    assert capsys.readouterr().out.count("\n") == 1
    monkeypatch.setenv("LIFELINE_AUDIT_STRICT", "1")
    assert audit.main(["constraints.txt", "--pip-audit", exe]) == 3


def test_kubernetes_and_compose_use_the_same_kafka_image() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/kubernetes/lifeline.yaml").read_text())
            if d]
    job = next(d for d in docs if d["kind"] == "Job")
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == compose["services"]["kafka"]["image"] == \
        compose["services"]["kafka-init"]["image"]
