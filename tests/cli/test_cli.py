"""One command-line style: every command's ``--help`` shows its defaults and an example, the
same thing has the same option everywhere, ``--version``, ``registry check --list-defaults``,
``grafana generate --check``, and errors as one line without a traceback.

The error paths run ``python -m services.cli`` as a person does (the real entry point and
exit code) against a free port nothing listens on: no broker, InfluxDB or Grafana there."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from services.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "registry" / "wenzhou-bay.yaml"
ONCALL = ROOT / "deploy" / "oncall" / "wenzhou-bay.yaml"
WIDTH = 200  # so no help line is wrapped inside a default


def commands() -> Iterator[tuple[tuple[str, ...], typer.core.TyperCommand | typer.core.TyperGroup]]:
    """Every command and group, with its path below ``lifeline``."""
    def walk(path: tuple[str, ...], cmd: object) -> Iterator[tuple[tuple[str, ...], object]]:
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk((*path, name), sub)

    yield from walk((), get_command(app))  # type: ignore[misc]


ALL = list(commands())  # services/ops/cli.py's `backup` group included
IDS = [" ".join(p) or "lifeline" for p, _ in ALL]


def options(cmd: object) -> list[typer.core.TyperOption]:
    return [p for p in getattr(cmd, "params", []) if isinstance(p, typer.core.TyperOption)
            and p.name not in ("help", "show_version")]


def run_help(path: tuple[str, ...]) -> str:
    res = CliRunner().invoke(app, [*path, "--help"], terminal_width=WIDTH)
    assert res.exit_code == 0, res.output
    return res.output


# --------------------------------------------------------------------------- help
@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_every_help_has_an_example_of_that_command(path: tuple[str, ...], cmd: object) -> None:
    text = run_help(path)
    assert "Example:" in text
    example = text.split("Example:", 1)[1]
    assert " ".join(("lifeline", *path)) in example, example


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=IDS)
def test_every_option_shows_its_default_or_that_it_is_required(path: tuple[str, ...],
                                                               cmd: object) -> None:
    text = run_help(path)
    for opt in options(cmd):
        if opt.is_flag and not opt.secondary_opts and opt.default is False:
            continue  # a lone flag (--dry-run, --check) is off unless given
        ctx = typer.Context(cmd, info_name=path[-1] if path else "lifeline")  # type: ignore[arg-type]
        record = opt.get_help_record(ctx)
        assert record is not None, opt.name
        assert re.search(r"\[(env var: \w+; )?(default: .+|required)\]$", record[1]), (
            opt.name, record)
        assert record[0].split()[0].rstrip(",") in text  # and it is in the help as printed


def test_help_works_with_h_too() -> None:
    res = CliRunner().invoke(app, ["registry", "check", "-h"], terminal_width=WIDTH)
    assert res.exit_code == 0 and "--list-defaults" in res.output


# --------------------------------------------------------------------------- one name each
def with_param(name: str) -> dict[str, object]:
    return {" ".join(p): next(o for o in options(c) if o.name == name)
            for p, c in ALL if any(o.name == name for o in options(c))}


def test_the_registry_is_always_the_same_option() -> None:
    found = with_param("registry")
    assert set(found) == {"simulate", "score", "run", "grafana generate", "grafana provision",
                          "mqtt accounts", "registry scale", "registry check", "backup create"}
    for name, opt in found.items():
        assert (opt.opts, opt.envvar, opt.help, opt.default) == (  # type: ignore[attr-defined]
            ["--registry"], "LIFELINE_REGISTRY", "The facility registry (YAML or JSON).",
            Path("deploy/registry/wenzhou-bay.yaml")), name


def test_the_oncall_file_is_always_the_same_option() -> None:
    found = with_param("oncall")
    assert set(found) == {"run", "oncall check", "oncall who", "backup create", "score"}
    for name, opt in found.items():
        assert (opt.opts, opt.envvar, opt.default) == (  # type: ignore[attr-defined]
            ["--oncall"], "LIFELINE_NOTIFIER_ONCALL", Path("deploy/oncall/wenzhou-bay.yaml")), name
        assert opt.help == "The on-call file (YAML): people, channels, teams, routes."  # type: ignore[attr-defined]


def test_no_file_is_a_positional_argument() -> None:
    for path, cmd in ALL:
        for p in getattr(cmd, "params", []):
            if isinstance(p, typer.core.TyperArgument):
                # The command's one subject; `backup`'s folder is what it makes or reads.
                assert (p.name in ("topic", "alarm_id", "order_id")
                        or (path[0] == "backup" and p.name == "folder")), (path, p.name)


def test_idle_and_duration_mean_one_thing_each() -> None:
    spelled = {o for _, c in ALL for opt in options(c) for o in opt.opts}
    assert "--timeout" not in spelled
    idle = with_param("idle")
    assert set(idle) == {"tail", "score", "dlq replay"}
    assert all(o.help.startswith("Stop reading after this many seconds without a new record")  # type: ignore[attr-defined]
               for o in idle.values())
    duration = with_param("duration")
    assert set(duration) == {"simulate", "run", "bench"}
    assert all(o.help.startswith("How long to run, seconds")  # type: ignore[attr-defined]
               for o in duration.values())


def test_simulate_refuses_a_duration_with_a_scenario() -> None:
    res = CliRunner().invoke(app, ["simulate", "--scenario", "summer-rainstorm",
                                   "--duration", "10"])
    assert res.exit_code == 1
    assert res.stderr.strip() == ("--duration does not apply to --scenario (a scenario has its "
                                  "own length)")


# --------------------------------------------------------------------------- version
def test_version_is_the_package_version_and_the_changelog_agrees() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert res.stdout == f"lifeline {pyproject}\n"
    assert version("lifeline") == pyproject
    released = re.findall(r"^## (\d+\.\d+\.\d+) ", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert released[0] == pyproject  # the newest release in the changelog


# --------------------------------------------------------------------------- defaults
def test_list_defaults_has_one_row_per_counted_default() -> None:
    summary = CliRunner().invoke(app, ["registry", "check", "--registry", str(EXAMPLE)])
    assert summary.exit_code == 0, summary.output
    counted = json.loads(summary.stdout)["default_thresholds_to_replace"]
    res = CliRunner().invoke(app, ["registry", "check", "--registry", str(EXAMPLE),
                                   "--list-defaults", "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == counted
    # Independently of the code: one `default: true` in the YAML per row.
    assert counted == len(re.findall(r"^ +default: true$", EXAMPLE.read_text(encoding="utf-8"),
                                     re.M))
    assert list(rows[0]) == ["facility", "sensor", "rule", "level", "value", "source"]
    first = rows[0]
    assert (first["facility"], first["sensor"], first["rule"], first["level"], first["value"]) \
        == ("DR-BH-001", "DR-BH-001-L1", "value-upper", "blue", "1.8")
    assert first["source"].startswith("GB 50014-2021")
    composite = next(r for r in rows if r["rule"] == "rain-and-rising")
    assert composite["sensor"] == "DR-BH-001-R1,DR-BH-001-L1"
    assert composite["value"] == "sum-3600s >= 20 & rate-600s >= 0.05"
    table = CliRunner().invoke(app, ["registry", "check", "--registry", str(EXAMPLE),
                                     "--list-defaults"])
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["facility", "sensor", "rule", "level", "value", "source"]
    assert len(lines) == counted + 1
    assert lines[1].split()[:5] == ["DR-BH-001", "DR-BH-001-L1", "value-upper", "blue", "1.8"]


def test_provenance_cites_standards_or_practice_never_a_file() -> None:
    res = CliRunner().invoke(app, ["registry", "check", "--registry", str(EXAMPLE),
                                   "--list-defaults", "--format", "csv"])
    sources = {r["source"] for r in csv.DictReader(io.StringIO(res.stdout))}
    generator = (ROOT / "deploy" / "registry" / "generate_example.py").read_text()
    assert "DOMAIN.md" not in EXAMPLE.read_text(encoding="utf-8")
    for src in sources:
        assert not re.search(r"\b[\w/-]+\.(md|py|ya?ml|json|txt)\b", src), src
        # A national or local standard (GB, GBZ, CJJ, JGJ, HJ, JT/T, JTG, CMA, DBnn), stated
        # practice, or a value declared a placeholder ("assumed" says so).
        assert re.search(r"GB|GBZ|CJJ|JGJ|HJ \d|JT/T|JTG|CMA|DB\d\d|practice|placeholder|assumed",
                         src), src
    assert not re.search(r'SRC_\w+ = \(?"[^\n]*DOMAIN\.md', generator)


# --------------------------------------------------------------------------- dashboards
def test_grafana_generate_check_names_stale_missing_and_extra_files(tmp_path: Path) -> None:
    out = tmp_path / "boards"
    res = CliRunner().invoke(app, ["grafana", "generate", "--registry", str(EXAMPLE),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    check = ["grafana", "generate", "--check", "--registry", str(EXAMPLE), "--out", str(out)]
    ok = CliRunner().invoke(app, check)
    assert ok.exit_code == 0 and ok.stdout.strip() == f"11 dashboards in {out} are current"
    (out / "bridge.json").write_text((out / "bridge.json").read_text().replace("0.3", "0.4"))
    (out / "sewage.json").unlink()
    (out / "old.json").write_text("{}")
    stale = CliRunner().invoke(app, check)
    assert stale.exit_code == 1
    line = stale.stderr.strip()
    assert "\n" not in line
    assert f"{out / 'bridge.json'} (stale)" in line and f"{out / 'sewage.json'} (missing)" in line
    assert f"{out / 'old.json'} (not generated)" in line
    assert f"{out / 'drainage.json'}" not in line


def test_committed_dashboards_pass_the_check() -> None:
    res = CliRunner().invoke(app, ["grafana", "generate", "--check", "--registry", str(EXAMPLE),
                                   "--out", str(ROOT / "grafana" / "dashboards")])
    assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- errors
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def nowhere(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose Kafka, InfluxDB and Grafana are a port nothing listens on."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFELINE_")}
    env.update(LIFELINE_STATE_DIR=str(tmp_path_factory.mktemp("state")),
               LIFELINE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}",
               LIFELINE_INFLUX_URL=f"http://127.0.0.1:{port}",
               LIFELINE_NOTIFIER_LINK_SECRET=secrets.token_urlsafe(24), PORT=str(port))
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=90, check=False)


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("broken")
    (d / "registry.yaml").write_text("version: 1\nname: x\nfacilities: [{id: 1}]\n")
    (d / "oncall.yaml").write_text("people: nobody\n")
    (d / "truth.json").write_text(json.dumps({"t0": 0, "sensors": 1, "facilities": []}))
    return d


MISSING = "/nonexistent/lifeline.yaml"


@pytest.mark.parametrize("args", [
    ["registry", "check", "--registry", MISSING],
    ["registry", "scale", "--registry", MISSING, "--factor", "2", "--out", "/tmp/x.json"],
    ["grafana", "generate", "--registry", MISSING],
    ["simulate", "--registry", MISSING],
    ["mqtt", "accounts", "--registry", MISSING, "--out", "/tmp/acc",
     "--ingest-password", "long-enough-password"],
], ids=lambda a: " ".join(a[:2]))
def test_a_missing_registry_is_one_line(nowhere: dict[str, str], args: list[str]) -> None:
    line = one_line_error(cli(nowhere, *args))
    assert line == (f"cannot read registry {MISSING}: [Errno 2] No such file or directory: "
                    f"'{MISSING}'")


def test_an_invalid_registry_or_oncall_file_is_one_line(nowhere: dict[str, str],
                                                        broken: Path) -> None:
    reg = one_line_error(cli(nowhere, "registry", "check", "--registry",
                             str(broken / "registry.yaml")))
    assert str(broken / "registry.yaml") in reg
    board = one_line_error(cli(nowhere, "grafana", "generate", "--registry",
                               str(broken / "registry.yaml"), "--out", str(broken / "b")))
    assert board == reg
    oc = one_line_error(cli(nowhere, "oncall", "who", "--oncall", str(broken / "oncall.yaml")))
    assert str(broken / "oncall.yaml") in oc


@pytest.mark.parametrize("args", [["oncall", "check"], ["oncall", "who"]])
def test_a_missing_oncall_file_is_one_line(nowhere: dict[str, str], args: list[str]) -> None:
    line = one_line_error(cli(nowhere, *args, "--oncall", MISSING))
    assert line == (f"cannot read on-call file {MISSING}: [Errno 2] No such file or directory: "
                    f"'{MISSING}'")


def test_the_env_variable_names_the_file_too(nowhere: dict[str, str]) -> None:
    env = {**nowhere, "LIFELINE_REGISTRY": MISSING, "LIFELINE_NOTIFIER_ONCALL": MISSING}
    assert MISSING in one_line_error(cli(env, "registry", "check"))
    assert MISSING in one_line_error(cli(env, "oncall", "check"))


@pytest.mark.parametrize("args", [
    ["tail", "alarms", "--limit", "1"],
    ["dlq", "replay", "--reason", "qos0", "--since", "2026-11-26T08:00:00+08:00"],
    ["oncall", "ack", "A-1", "--by", "chief", "--facility", "DR-BH-001"],
    ["score", "--scenario", "summer-rainstorm", "--truth", "TRUTH", "--out", "OUT"],
], ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_broker_is_one_line(nowhere: dict[str, str], broken: Path,
                                           args: list[str]) -> None:
    args = [str(broken / "truth.json") if a == "TRUTH" else str(broken / "score") if a == "OUT"
            else a for a in args]
    line = one_line_error(cli(nowhere, *args))
    assert line.startswith(f"cannot reach the Kafka broker at 127.0.0.1:{nowhere['PORT']} "
                           "(LIFELINE_KAFKA_BOOTSTRAP): KafkaConnectionError"), line


@pytest.mark.parametrize("args", [
    ["oncall", "history", "A-1"],
    ["oncall", "ack", "A-1", "--by", "chief"],
    ["score", "--scenario", "summer-rainstorm", "--truth", "TRUTH", "--from", "influx",
     "--out", "OUT"],
], ids=lambda a: " ".join(a[:2] + a[-3:-2]))
def test_an_unreachable_influxdb_is_one_line(nowhere: dict[str, str], broken: Path,
                                             args: list[str]) -> None:
    args = [str(broken / "truth.json") if a == "TRUTH" else str(broken / "score") if a == "OUT"
            else a for a in args]
    line = one_line_error(cli(nowhere, *args))
    assert f"InfluxDB at http://127.0.0.1:{nowhere['PORT']}: ClientConnectorError" in line, line


def test_an_unreachable_grafana_is_one_line(nowhere: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{nowhere['PORT']}"
    line = one_line_error(cli(nowhere, "grafana", "provision", "--url", url, "--token",
                              secrets.token_urlsafe(16), "--influx-url", "http://influxdb:8086"))
    assert line == f"cannot reach Grafana at {url}: Connection refused"


def test_debug_shows_the_traceback(nowhere: dict[str, str]) -> None:
    quiet = one_line_error(cli(nowhere, "grafana", "generate", "--registry", MISSING))
    loud = cli({**nowhere, "LIFELINE_DEBUG": "1"}, "grafana", "generate", "--registry", MISSING)
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr and loud.stderr.strip().endswith(quiet)


def test_usage_errors_stay_click_usage_errors() -> None:
    res = CliRunner().invoke(app, ["tail", "alarms", "--timeout", "3"])
    assert res.exit_code == 2
    assert "No such option: --timeout" in res.stderr


def test_a_service_with_a_missing_registry_is_one_line(nowhere: dict[str, str]) -> None:
    line = one_line_error(cli({**nowhere, "LIFELINE_REGISTRY": MISSING}, "processor"))
    assert line.startswith(f"cannot read registry {MISSING}: ")


def test_only_errors_of_the_situation_are_expected() -> None:
    from aiokafka.errors import KafkaConnectionError

    from schemas.registry import RegistryError
    from services.cli import describe, expected
    from services.core.errors import LifelineError

    assert all(expected(e) for e in (FileNotFoundError(2, "No such file or directory", "x.yaml"),
                                     RegistryError("bad"), LifelineError("no"),
                                     KafkaConnectionError("down")))
    assert not expected(KeyError("bug"))  # a bug: services keep its traceback
    assert describe(FileNotFoundError(2, "No such file or directory", "x.yaml")) == \
        "x.yaml: No such file or directory"
    assert describe(KeyError("bug")) == "KeyError: 'bug' (LIFELINE_DEBUG=1 shows the traceback)"


def test_a_reader_that_stops_early_is_no_error(nowhere: dict[str, str]) -> None:
    """`lifeline registry check --list-defaults | head -c 10`: the table (~150 kB) is more
    than a pipe holds, so the command writes into a pipe whose reader has left."""
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "registry", "check",
                             "--list-defaults"], env=nowhere, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(10)
    proc.stdout.close()  # what `head` does once it has its ten bytes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=90) == 0, err
    assert first.startswith(b"facility")  # the table had started
    assert err == ""
