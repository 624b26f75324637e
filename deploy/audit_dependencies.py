"""Known vulnerabilities of the pinned Python dependencies (``pip-audit`` of constraints.txt).

Run by ``make test`` (``make audit``). Audits exactly the pinned versions (``--no-deps
--disable-pip``: nothing is installed) against pip-audit's default source, the PyPI JSON
API. Outcomes, one clear line each:

- a known vulnerability: ``pip-audit: VULNERABLE …`` for each, exit status 1 (fails the test
  command);
- the source cannot be reached (no network, a mirror without the JSON API, a name-resolution
  or connection error): ``pip-audit: SKIPPED — …`` saying why, exit status 0 so the test
  command continues — unless ``LIFELINE_AUDIT_STRICT=1`` (a deployer's CI that must audit),
  then exit status 3;
- otherwise ``pip-audit: OK — N pinned packages audited, no known vulnerability``.

Usage: ``python deploy/audit_dependencies.py [constraints.txt]`` (``--pip-audit PATH`` or
``LIFELINE_PIP_AUDIT`` picks the executable; default: the one beside this Python).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 300
# What pip-audit says when its vulnerability source did not answer for a package.
_NOT_REACHED = re.compile(r"not found on PyPI|could not be audited|Connection|resolve|"
                          r"timed out|Temporary failure|Max retries", re.IGNORECASE)
_NETWORK_ERROR = re.compile(r"ConnectionError|NameResolutionError|Name or service not known|"
                            r"Temporary failure in name resolution|Max retries exceeded|"
                            r"timed out|Network is unreachable|Connection refused|"
                            r"SSLError|ProxyError", re.IGNORECASE)


@dataclass
class Outcome:
    status: int  # 0 ok or skipped, 1 vulnerable, 2 the audit itself failed, 3 strict skip
    lines: list[str]


def summarize(report: dict[str, Any], *, strict: bool = False) -> Outcome:
    """pip-audit's JSON report as one line per finding (or one line in all)."""
    deps = report.get("dependencies") or []
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)
    if vulnerable:
        lines = []
        for d in vulnerable:
            for v in d["vulns"]:
                fixes = ", ".join(v.get("fix_versions") or []) or "no fixed version yet"
                lines.append(f"pip-audit: VULNERABLE {d['name']}=={d.get('version', '?')}: "
                             f"{v.get('id', '?')} (fixed in: {fixes})")
        return Outcome(1, lines)
    if deps and audited == 0:
        reasons = {("unreachable" if _NOT_REACHED.search(str(d["skip_reason"])) else "other")
                   for d in skipped}
        why = ("the vulnerability source (PyPI's JSON API) cannot be reached from here"
               if reasons == {"unreachable"} else "pip-audit skipped every package")
        line = (f"pip-audit: SKIPPED — {why}: 0 of {len(deps)} pinned packages audited; "
                "nothing was checked for known vulnerabilities")
        return Outcome(3 if strict else 0, [line])
    lines = [f"pip-audit: OK — {audited} pinned packages audited, no known vulnerability"]
    if skipped:
        names = ", ".join(sorted(str(d["name"]) for d in skipped))
        lines[0] += f"; {len(skipped)} not audited: {names}"
    return Outcome(0, lines)


def _default_pip_audit() -> str:
    here = Path(sys.executable).with_name("pip-audit")
    return os.environ.get("LIFELINE_PIP_AUDIT") or (str(here) if here.exists() else "pip-audit")


def run(constraints: Path, pip_audit: str, *, strict: bool = False) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        cmd = [pip_audit, "-r", str(constraints), "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "--format", "json", "--output", str(out)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  check=False)
        except FileNotFoundError:
            return Outcome(2, [f"pip-audit: FAILED — {pip_audit} is not installed "
                               "(make setup installs it with the dev dependencies)"])
        except subprocess.TimeoutExpired:
            line = (f"pip-audit: SKIPPED — the vulnerability source did not answer within "
                    f"{TIMEOUT_S} s; nothing was checked for known vulnerabilities")
            return Outcome(3 if strict else 0, [line])
        report: dict[str, Any] | None = None
        if out.exists() and out.stat().st_size:
            try:
                report = json.loads(out.read_text())
            except ValueError:
                report = None
    if report is not None:
        return summarize(report, strict=strict)
    stderr = proc.stderr.strip()
    network = _NETWORK_ERROR.search(stderr)
    if network:
        line = (f"pip-audit: SKIPPED — the vulnerability source cannot be reached "
                f"({network.group(0)}); nothing was checked for known vulnerabilities")
        return Outcome(3 if strict else 0, [line])
    last = stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}"
    return Outcome(2, [f"pip-audit: FAILED — {last[:300]}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("constraints", nargs="?", default="constraints.txt", type=Path)
    parser.add_argument("--pip-audit", default=_default_pip_audit())
    args = parser.parse_args(argv)
    strict = os.environ.get("LIFELINE_AUDIT_STRICT", "") not in ("", "0", "false", "no")
    outcome = run(args.constraints, args.pip_audit, strict=strict)
    for line in outcome.lines:
        print(line, flush=True)
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())
