"""``lifeline``: one command-line entry point, one subcommand per service and tool.

One style everywhere: the registry is ``--registry`` (env ``LIFELINE_REGISTRY``), the on-call
file ``--oncall`` (env ``LIFELINE_NOTIFIER_ONCALL``), ``--duration`` is how long a command
runs (seconds), ``--idle`` stops reading a topic after that many seconds without a record;
every ``--help`` shows the defaults and an example. A refusal is one line on stderr with a
non-zero exit code, never a traceback (``LIFELINE_DEBUG=1`` shows it).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic_settings import SettingsConfigDict
from typer.core import TyperGroup

from services.core.settings import (
    DEFAULT_REGISTRY,
    MqttSettings,
    RegistrySettings,
    SettingsError,
    _Group,
    load,
    state_dir,
)
from services.ops.cli import backup_app
from services.orders.cli import orders_app
from services.reports.cli import report_app

if TYPE_CHECKING:
    from schemas.alarm import AlarmEvent
    from schemas.registry import Registry
    from simulators.publisher import Publisher

DEBUG_ENV = "LIFELINE_DEBUG"
DEFAULT_ONCALL = "deploy/oncall/wenzhou-bay.yaml"  # = services.notifier.config.DEFAULT_ONCALL


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _errno_reason(exc: BaseException) -> str:
    """The operating system's reason behind a wrapped connection error ("Connection refused")."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def expected(exc: BaseException) -> bool:
    """An error of the situation (a file, a broker, a refusal), not of Lifeline's code."""
    from aiokafka.errors import KafkaError

    from services.core.errors import LifelineError

    return (isinstance(exc, LifelineError | OSError | KafkaError)
            or type(exc).__module__.split(".")[0] in ("schemas", "services", "simulators"))


def describe(exc: BaseException) -> str:
    """One line for an error a command did not handle itself: what failed and where."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    if isinstance(exc, KafkaError):
        try:
            from services.core.settings import KafkaSettings

            where = f" at {load(KafkaSettings).bootstrap}"
        except (SettingsError, ValueError):
            where = ""
        if isinstance(exc, KafkaConnectionError):
            return (f"cannot reach the Kafka broker{where} (LIFELINE_KAFKA_BOOTSTRAP): "
                    f"{_one_line(str(exc))}")
        return f"Kafka{where}: {_one_line(str(exc)) or type(exc).__name__}"
    if isinstance(exc, OSError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        return f"{_one_line(str(exc)) or type(exc).__name__}"
    text = _one_line(str(exc)) or type(exc).__name__
    if expected(exc):
        return text
    return f"{type(exc).__name__}: {text} ({DEBUG_ENV}=1 shows the traceback)"


SERVICES = frozenset({"ingest", "processor", "writer", "notifier"})


def _stdout_gone() -> None:
    """The reader of stdout went away (a closed pipe): what is still buffered goes to
    /dev/null, so the flush at exit does not fail again (Python's documented recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class LifelineGroup(TyperGroup):
    """The top-level group: an error no command handled becomes one line on stderr, exit 1.
    A service that crashes on an unexpected error keeps its traceback (it goes to its log)."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors, exit codes
            raise
        except BrokenPipeError:  # `lifeline … | head`: the reader has all it wanted
            _stdout_gone()
            raise typer.Exit(0) from None
        except SettingsError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            typer.secho(f"lifeline: refusing to start: {'; '.join(exc.lines)}",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV) or (ctx.invoked_subcommand in SERVICES
                                             and not expected(exc)):
                raise
            typer.secho(describe(exc), fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None


def _quiet_kafka() -> None:
    """Command-line tools report an unreachable broker in one line of their own: aiokafka's
    connection errors would add a log line per attempt."""
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def example(*lines: str) -> str:
    """The epilog of a command's ``--help``: an example, kept as written (``\\b``)."""
    return "Example:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "show_default": True,
                           "max_content_width": 110}


def _typer(help_text: str, *examples: str) -> typer.Typer:
    return typer.Typer(help=help_text, epilog=example(*examples), no_args_is_help=True,
                       rich_markup_mode=None, context_settings=CONTEXT)


APP_HELP = ("Lifeline: municipal facilities (drainage, bridges, sewage) from MQTT to alarms "
            "and pages. Same names everywhere: --registry (env LIFELINE_REGISTRY), --oncall "
            "(env LIFELINE_NOTIFIER_ONCALL), --duration = how long to run (s), --idle = stop "
            "reading after N s without a record. Errors are one line (exit 1); "
            f"{DEBUG_ENV}=1 shows the traceback.")
app = typer.Typer(help=APP_HELP, epilog=example("lifeline stack up && lifeline run",
                                                      "lifeline registry check --list-defaults"),
                  cls=LifelineGroup, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None, context_settings=CONTEXT)
stack_app = _typer("The local embedded stack: Mosquitto, Tansu (Kafka API), influxd.",
                   "lifeline stack up", "lifeline stack status")
schemas_app = _typer("The contracts: export JSON Schemas for device vendors.",
                     "lifeline schemas export")
registry_app = _typer("The facility registry (YAML).", "lifeline registry check")
grafana_app = _typer("Grafana dashboards generated from the registry.",
                     "lifeline grafana generate --check")
mqtt_app = _typer("MQTT broker accounts and ACLs.",
                  "lifeline mqtt accounts --out deploy/mosquitto/accounts")
oncall_app = _typer("On-call: rotas, acknowledgements, the audit trail.", "lifeline oncall who")
dlq_app = _typer("The dead-letter topic lifeline.readings.dlq: replay refused reports.",
                 "lifeline dlq replay --reason rate_limited --since 2026-11-26T08:00:00+08:00")
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
app.add_typer(registry_app, name="registry")
app.add_typer(grafana_app, name="grafana")
app.add_typer(mqtt_app, name="mqtt")
app.add_typer(oncall_app, name="oncall")
app.add_typer(dlq_app, name="dlq")
app.add_typer(backup_app, name="backup")
app.add_typer(orders_app, name="orders")
app.add_typer(report_app, name="report")

# The same option, spelled and explained the same way, in every command that takes it.
RegistryOption = Annotated[Path, typer.Option(
    "--registry", envvar="LIFELINE_REGISTRY", show_envvar=True,
    help="The facility registry (YAML or JSON).")]
OncallOption = Annotated[Path, typer.Option(
    "--oncall", envvar="LIFELINE_NOTIFIER_ONCALL", show_envvar=True,
    help="The on-call file (YAML): people, channels, teams, routes.")]
IDLE_HELP = "Stop reading after this many seconds without a new record"


def lifeline_version() -> str:
    try:
        return version("lifeline")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lifeline {lifeline_version()}")
        raise typer.Exit


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    pass


class SimulatorMqtt(_Group):
    """The simulator's MQTT account (``LIFELINE_SIMULATOR_MQTT_*``)."""

    model_config = SettingsConfigDict(env_prefix="LIFELINE_SIMULATOR_MQTT_", extra="ignore",
                                      frozen=True)
    username: str = "lifeline-simulator"
    password: str = ""


def _fail(text: str, code: int = 1) -> typer.Exit:
    typer.secho(_one_line(text), fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# --------------------------------------------------------------------------- stack
@stack_app.command("up", epilog=example("lifeline stack up"))
def stack_up() -> None:
    """Start the stack in the background (state, configs, data and logs in LIFELINE_STATE_DIR,
    default .lifeline/) and wait until every component is healthy."""
    from services.core.logging import configure
    from services.stack.manager import Ports, Stack, StackError, StackSettings

    configure("WARNING")
    t0 = time.monotonic()
    settings = StackSettings()
    stack = Stack(state_dir(), Ports.from_settings(settings), partitions=settings.partitions,
                  daemon=True)
    try:
        info = stack.up()
    except StackError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"stack up in {time.monotonic() - t0:.2f}s: MQTT 127.0.0.1:{info.ports.mqtt}, "
               f"Kafka 127.0.0.1:{info.ports.kafka}, InfluxDB http://127.0.0.1:{info.ports.influx}")
    typer.echo(f"state and logs in {stack.state}; connection settings in {stack.state}/stack.env")


@stack_app.command("status", epilog=example("lifeline stack status"))
def stack_status() -> None:
    """Show whether each component runs and answers its health check (exit 1 if not)."""
    from services.stack.manager import Stack, load_info

    info = load_info(state_dir())
    if info is None:
        raise _fail(f"no stack has been started in {state_dir()}")
    status = Stack(state_dir(), info.ports).status()
    for name, st in status.items():
        mark = "healthy" if st["healthy"] else ("running, not answering" if st["running"] else "stopped")
        typer.echo(f"{name:10s} {mark:24s} pid={st['pid']}")
    if not all(s["healthy"] for s in status.values()):
        raise typer.Exit(1)


@stack_app.command("down", epilog=example("lifeline stack down"))
def stack_down() -> None:
    """Stop every component of the stack started in LIFELINE_STATE_DIR."""
    from services.stack.manager import Stack, load_info

    info = load_info(state_dir())
    stopped = Stack(state_dir(), info.ports if info else None).down()
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("check", epilog=example("lifeline stack check"))
def stack_check() -> None:
    """Report missing system packages (exit 1 if any). Install with scripts/bootstrap.sh."""
    from services.stack.manager import check_dependencies

    missing = check_dependencies()
    for m in missing:
        typer.echo(f"missing: {m}")
    if missing:
        raise typer.Exit(1)
    typer.echo("all local-stack dependencies are installed")


# --------------------------------------------------------------------------- services
@app.command(epilog=example("LIFELINE_REGISTRY=deploy/registry/wenzhou-bay.yaml lifeline ingest"))
def ingest() -> None:
    """MQTT → Kafka: validate telemetry, forward reports to lifeline.readings, rejects to the DLQ."""
    from services.core.logging import configure
    from services.ingest.app import main

    configure(load(RegistrySettings).log_level, service="ingest")
    main()


@app.command(epilog=example("LIFELINE_REGISTRY=deploy/registry/wenzhou-bay.yaml lifeline processor"))
def processor() -> None:
    """Faust alarm engine: lifeline.readings → threshold rules → lifeline.alarms."""
    from services.processor.app import main

    main()


@app.command(epilog=example("lifeline writer"))
def writer() -> None:
    """Faust writer: readings and alarm events → InfluxDB, batched, with backpressure."""
    from services.writer.app import main

    main()


@app.command(epilog=example("LIFELINE_NOTIFIER_ONCALL=deploy/oncall/wenzhou-bay.yaml lifeline notifier"))
def notifier() -> None:
    """Faust notifier: lifeline.alarms → routing, rotas, escalation → channels; acks stop it."""
    from services.notifier.app import main

    main()


# --------------------------------------------------------------------------- tools
def _speed(text: str) -> float:
    try:
        value = float(text.lower().rstrip("x"))
    except ValueError as exc:
        raise typer.BadParameter(f"not a speed: {text!r} (e.g. 60x)") from exc
    if value <= 0:
        raise typer.BadParameter("the speed must be positive")
    return value


@app.command(epilog=example("lifeline simulate --duration 60 --breach DR-BH-001-L1",
                            "lifeline simulate --scenario summer-rainstorm --speed 600x"))
def simulate(
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
    scenario: Annotated[str | None, typer.Option(
        help="A scenario name (simulators/scenarios/NAME.yaml) or file: facility physics, "
             "weather, incidents and faults with ground truth.", show_default="none: steady "
                                                                   "values")] = None,
    duration: Annotated[float, typer.Option(
        min=0, help="How long to run, seconds (0 = until Ctrl-C); covers DURATION x SPEED "
                    "simulated seconds. Not with --scenario (it has its own length).")] = 0,
    speed: Annotated[str, typer.Option(help="Simulated seconds per real second, e.g. 60x.")
                     ] = "1x",
    scale: Annotated[int, typer.Option(help="Copies of every facility (load tests); the "
                                            "services need the same registry: `lifeline "
                                            "registry scale`.")] = 1,
    truth: Annotated[Path | None, typer.Option(
        help="Scenario: where to write the ground truth for `lifeline score`.",
        show_default="<state>/truth/<scenario>.json")] = None,
    t0: Annotated[float | None, typer.Option(help="Scenario: epoch second of its start.",
                                             show_default="so that it ends now")] = None,
    breach: Annotated[list[str] | None, typer.Option(
        help="SENSOR or SENSOR=VALUE to hold over its worst threshold (repeatable).",
        show_default="none")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (reproducible values).")] = 1,
    outages_in_real_time: Annotated[bool, typer.Option(
        "--outages-in-real-time", help="Scenario: publish the first minutes of every gateway "
        "outage (a blackout without UPS, a gateway_offline fault) at real time, the rest at "
        "--speed: the processor judges silence on the wall clock.")] = False,
) -> None:
    """Publish telemetry over MQTT: plausible steady values for every facility, or a
    scenario's physics with incidents and faults (--scenario)."""
    from schemas.registry import load_registry
    from simulators.publisher import Publisher, PublishError

    if scenario is not None and duration:
        raise _fail("--duration does not apply to --scenario (a scenario has its own length)")
    reg = load_registry(registry)
    if scale > 1:
        from simulators.scale import scale_registry

        reg = scale_registry(reg, scale)
    pace = _speed(speed)
    mqtt = load(MqttSettings)
    acct = load(SimulatorMqtt)
    try:
        pub = Publisher(mqtt.host, mqtt.port, acct.username, acct.password)
    except PublishError as exc:
        raise _fail(str(exc)) from exc
    if scenario is not None:
        _simulate_scenario(reg, scenario, pace, pub, truth or _truth_file(scenario), t0,
                           outages_in_real_time)
        return
    from simulators.basic import SteadySimulator

    sim = SteadySimulator(reg, seed=seed)
    for b in breach or []:
        sid, _, val = b.partition("=")
        try:
            v = sim.breach(sid, float(val) if val else None)
        except KeyError as exc:
            raise _fail(str(exc)) from exc
        typer.echo(f"holding {sid} at {v:g}")
    from simulators.pacing import paced_steps

    span = duration * pace  # simulated seconds covered in DURATION real seconds
    # Faster than real time starts in the past, so event times never run ahead of now.
    t0 = time.time() - (span if pace > 1 and duration else 0)
    try:
        for t in paced_steps(t0, pace, end=t0 + span if duration else float("inf")):
            for topic, payload in sim.reports(t):
                pub.publish(topic, payload)
    except KeyboardInterrupt:
        pass
    finally:
        pub.flush(30)
        pub.close()
    typer.echo(f"published {pub.published} reports")


def _truth_file(scenario: str) -> Path:
    return state_dir() / "truth" / f"{Path(scenario).stem}.json"


def _simulate_scenario(reg: Registry, name: str, pace: float, pub: Publisher,
                       truth: Path | None, t0: float | None,
                       outages_in_real_time: bool = False) -> None:
    from zoneinfo import ZoneInfo

    from schemas.scenario import ScenarioError, load_scenario
    from simulators.pacing import Schedule
    from simulators.scenario import ScenarioRun, outage_windows, scenario_path, start_epoch

    try:
        sc = load_scenario(scenario_path(name))
    except ScenarioError as exc:
        raise _fail(str(exc)) from exc
    schedule = Schedule(pace, outage_windows(reg, sc) if outages_in_real_time else None)
    if t0 is None:
        # Event times must never run ahead of the wall clock (ingest refuses the future):
        # the scenario starts in the past so that its end is reached just as it is published.
        latest = time.time() - (sc.duration_s - schedule.wall(sc.duration_s))
        t0 = start_epoch(latest, sc.start_local, ZoneInfo(reg.timezone))
    try:
        run = ScenarioRun(reg, sc, t0=t0, keep_truth=truth is not None)
    except ScenarioError as exc:  # the scenario names facilities the registry lacks
        raise _fail(str(exc)) from exc
    typer.echo(f"scenario {sc.name}: {len(run.gateways)} facilities, {run.sensor_count} "
               f"sensors, {sc.duration_s / 3600:.1f} h at {pace:g}x from "
               f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t0))}")
    wall0 = time.monotonic()
    try:
        for _, (topic, payload) in schedule.run((t, (tp, p)) for t, tp, p in run.reports()):
            pub.publish(topic, payload)
    except KeyboardInterrupt:
        pass
    finally:
        pub.flush(60)
        pub.close()
    if truth is not None:
        truth.parent.mkdir(parents=True, exist_ok=True)
        truth.write_text(json.dumps(run.truth_document()))
    typer.echo(f"published {run.reports_sent} reports, {run.readings_sent} readings in "
               f"{time.monotonic() - wall0:.1f}s" + (f"; ground truth in {truth}" if truth
                                                     else ""))


@app.command(epilog=example("lifeline score --scenario summer-rainstorm",
                            "lifeline score --scenario summer-rainstorm --from influx"))
def score(
    scenario: Annotated[str, typer.Option(help="The scenario's name or file.")],
    truth: Annotated[Path | None, typer.Option(
        help="The ground truth `simulate` wrote.", show_default="<state>/truth/<scenario>.json")
    ] = None,
    source: Annotated[str, typer.Option("--from", help="Where the alarms are: kafka "
                                                       "(lifeline.alarms) or influx.")] = "kafka",
    out: Annotated[Path | None, typer.Option(help="Folder for report.json and the plots.",
                                             show_default="<state>/score/<scenario>")] = None,
    idle: Annotated[float, typer.Option(min=0.5, help=f"{IDLE_HELP} (--from kafka).")] = 3.0,
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
    oncall: OncallOption = Path(DEFAULT_ONCALL),
) -> None:
    """Score the alarm engine against a scenario's ground truth: detection per incident
    and delay, false alarms per 1,000 sensor-hours, sensor faults reported as facility
    alarms, flapping, and what the alarms cost the people on call (the notifier's
    escalation and grouping over them, with the on-call file). Prints a table, writes
    report.json, a one-page summary.png (precision and recall per kind, delays, the alarms'
    timeline) and one PNG per incident; exit 1 if the scenario's expectations are not met."""
    from schemas.oncall import OnCallError, load_oncall
    from schemas.registry import load_registry
    from schemas.scenario import ScenarioError, load_scenario
    from simulators.plot import plot_incidents, plot_summary
    from simulators.scenario import risk_from_document, scenario_path
    from simulators.scoring import add_paging
    from simulators.scoring import score as score_alarms

    try:
        sc = load_scenario(scenario_path(scenario))
        people = load_oncall(oncall)
        doc = json.loads((truth or _truth_file(scenario)).read_text())
    except (ScenarioError, OnCallError, OSError, ValueError) as exc:
        raise _fail(describe(exc) if isinstance(exc, OSError) else str(exc)) from exc
    reg = load_registry(registry)
    alarms = _alarms_from(source, float(doc["t0"]), idle)
    result = score_alarms(sc, float(doc["t0"]), int(doc["sensors"]), alarms,
                          {f.id: f.district for f in reg.facilities}, set(doc["facilities"]),
                          risk=risk_from_document(doc))
    add_paging(result, sc, float(doc["t0"]), alarms, reg, people)
    folder = out or state_dir() / "score" / sc.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(result.as_dict(), indent=2))
    plots = plot_incidents(sc, reg, doc, alarms, folder)
    summary = plot_summary(sc, result, alarms, float(doc["t0"]), folder)
    typer.echo(result.table())
    typer.echo(f"report: {folder / 'report.json'}; summary: {summary}; plots: {len(plots)} "
               f"in {folder}")
    if not result.passed(sc):
        raise typer.Exit(1)


def _alarms_from(source: str, t0: float, idle: float) -> list[AlarmEvent]:
    import asyncio

    from schemas.alarm import AlarmEvent

    if source == "kafka":
        from schemas.codec import ALARM_EVENT
        from services.core import topics
        from services.core.kafka_tools import read_topic
        from services.core.settings import KafkaSettings

        raw: list[bytes] = []
        _quiet_kafka()
        asyncio.run(read_topic(load(KafkaSettings), topics.ALARMS, raw.append,
                               idle_timeout=idle))
        return [ALARM_EVENT.decode(r) for r in raw]
    if source != "influx":
        raise _fail(f"--from must be kafka or influx, not {source!r}")
    from schemas.storage import Measurement, qualified
    from services.core.influx import QueryError, query
    from services.core.settings import InfluxSettings

    q = f"SELECT * FROM {qualified(Measurement.ALARM_EVENT)} WHERE time >= {int(t0 * 1000)}ms"  # noqa: S608 — a number
    try:
        series = asyncio.run(query(load(InfluxSettings), q, timeout_s=60))
    except QueryError as exc:
        raise _fail(str(exc)) from exc
    out = []
    for s in series:
        cols = s["columns"]
        for row in s["values"]:
            r = dict(zip(cols, row, strict=True))
            out.append(AlarmEvent(
                event_id=r["event_id"], alarm_id=r["alarm_id"], event=r["event"],
                level=None if r["level"] == "none" else r["level"],
                previous_level=None if r["previous_level"] == "none" else r["previous_level"],
                category=r["category"], facility_id=r["facility"], kind=r["kind"],
                sensor=r["sensor"], metric=None if r["metric"] == "none" else r["metric"],
                rule=r["rule"], value=r.get("value"), threshold=r.get("threshold"), unit="",
                ts=int(r["time"]), message=r["message"], silenced=bool(r["silenced"]),
                suppressed_by=r["suppressed_by"] or None, flapping=bool(r["flapping"])))
    return out


@app.command(epilog=example("lifeline run", "lifeline run --duration 60 --breach-every 20"))
def run(
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
    duration: Annotated[float, typer.Option(
        min=0, help="How long to run, seconds (0 = until Ctrl-C).")] = 0,
    breach_every: Annotated[float, typer.Option(
        help="Every N seconds push one sensor over its thresholds for N/2 s (0 = never).")] = 40,
    oncall: OncallOption = Path(DEFAULT_ONCALL),
) -> None:
    """The main job on the local stack: stack, ingest, processor, writer, notifier and the
    simulator, with readings counted, alarms and pages shown live. Ctrl-C stops everything.
    The on-call file's channels are replaced by a local receiver that prints the pages."""
    from services.demo.run import run_demo

    sys.exit(run_demo(registry=registry, duration=duration, breach_every=breach_every,
                      oncall=oncall))


@app.command(epilog=example("lifeline bench --sensors 20000 --interval 10 --duration 60 "
                            "--out result.json"))
def bench(
    sensors: Annotated[int, typer.Option(min=10, help="Sensors (10 per gateway).")] = 20000,
    interval: Annotated[float, typer.Option(help="Seconds between a gateway's reports.")] = 10,
    duration: Annotated[float, typer.Option(
        min=1, help="How long to run, seconds (of sustained load).")] = 60,
    out: Annotated[Path | None, typer.Option(help="Write the full result (JSON) here.",
                                             show_default="only the summary, on stdout")
                   ] = None,
) -> None:
    """The whole local stack under sustained load: rates accepted/evaluated/stored,
    publish→alarm/stored/notification latency, lag, CPU and memory per component, loss,
    beside the bare chain (MQTT → Kafka → consumer → InfluxDB, no validation, no rules)
    measured first in the same run; prints Lifeline ÷ bare chain (docs/benchmarks.md)."""
    import tempfile

    from services.bench.load import run_bench
    from services.core.logging import configure

    configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-") as tmp:
        result = run_bench(sensors=sensors, interval_s=interval, duration_s=duration,
                           state=Path(tmp), keep_logs=out.with_suffix(".logs") if out else None)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text)
    summary = {k: v for k, v in result.items() if k != "samples"}
    typer.echo(json.dumps(summary, indent=2))
    alarm = result["latency_publish_to_alarm"]
    bare = result["bare_chain"]
    typer.echo(f"Lifeline ÷ bare chain: {result['ratio_to_bare_chain']:.2f} by CPU per reading "
               f"({result['cpu_us_per_reading_total']} µs vs {bare['cpu_us_per_reading_total']}"
               f" µs), {result['ratio_to_bare_chain_rate']:.2f} by rate "
               f"({result['accepted_readings_per_s']:,} readings/s sustained vs a "
               f"{bare['readings_per_s']:,}/s burst); publish → alarm p99 "
               f"{alarm.get('p99_ms', '—')} ms; lost {result['lost_reports']}", err=True)


@app.command(epilog=example("lifeline tail alarms --limit 10", "lifeline tail dlq --idle 5"))
def tail(
    topic: Annotated[str, typer.Argument(help="alarms, dlq or readings (or a topic name).")],
    limit: Annotated[int, typer.Option(min=0, help="Stop after N records (0 = no limit).")] = 0,
    idle: Annotated[float, typer.Option(min=0, help=f"{IDLE_HELP} (0 = follow).")] = 0,
) -> None:
    """Print records of a Kafka topic from the beginning, one JSON per line."""
    import asyncio

    from services.core import topics
    from services.core.kafka_tools import read_topic
    from services.core.settings import KafkaSettings

    _quiet_kafka()
    name = {"alarms": topics.ALARMS, "dlq": topics.READINGS_DLQ,
            "readings": topics.READINGS}.get(topic, topic)

    def show(value: bytes) -> None:
        typer.echo(value.decode(errors="replace"))

    asyncio.run(read_topic(load(KafkaSettings), name, show, limit=limit, idle_timeout=idle))


@schemas_app.command("export", epilog=example("lifeline schemas export"))
def schemas_export(
    out: Annotated[Path, typer.Option(help="Folder for the JSON Schema files.")] = Path("schemas/json"),
) -> None:
    """Write the JSON Schema of every contract (committed under schemas/json/)."""
    from schemas.export import export_all

    for path in export_all(out):
        typer.echo(f"wrote {path}")


@grafana_app.command("generate", epilog=example("lifeline grafana generate",
                                                 "lifeline grafana generate --check"))
def grafana_generate(
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
    out: Annotated[Path, typer.Option(help="Folder for the dashboards.")] = Path(
        "grafana/dashboards"),
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 naming every dashboard in the folder that "
                        "differs from the registry's, is missing or is left over (CI).")
    ] = False,
) -> None:
    """Write the dashboards (JSON, committed under grafana/dashboards/) for the registry:
    their threshold bands come from it, so re-run (or --check) after editing thresholds."""
    from schemas.registry import load_registry
    from services.dashboards.generate import dashboards, render, write

    reg = load_registry(registry)
    if not check:
        for path in write(reg, out):
            typer.echo(f"wrote {path}")
        return
    boards = {name: render(board) for name, board in dashboards(reg).items()}
    stale = [f"{out / name} (stale)" for name, text in sorted(boards.items())
             if (out / name).exists() and (out / name).read_text(encoding="utf-8") != text]
    stale += [f"{out / name} (missing)" for name in sorted(boards) if not (out / name).exists()]
    stale += [f"{p} (not generated)" for p in sorted(out.glob("*.json")) if p.name not in boards]
    if stale:
        raise _fail(f"dashboards out of date with {registry}: {', '.join(stale)}; run "
                    f"`lifeline grafana generate --registry {registry} --out {out}`")
    typer.echo(f"{len(boards)} dashboards in {out} are current")


@grafana_app.command("provision", epilog=example(
    "LIFELINE_GRAFANA_TOKEN=... lifeline grafana provision --url http://grafana:3000 "
    "--influx-url http://influxdb:8086"))
def grafana_provision(
    url: Annotated[str, typer.Option(help="Grafana base URL, e.g. http://grafana:3000")],
    token: Annotated[str, typer.Option(envvar="LIFELINE_GRAFANA_TOKEN", show_envvar=True,
                                       help="Grafana service-account token.")],
    influx_url: Annotated[str, typer.Option(help="InfluxDB URL as Grafana reaches it.")],
    influx_token: Annotated[str, typer.Option(envvar="LIFELINE_INFLUX_TOKEN", show_envvar=True,
                                              help="InfluxDB token for the datasource.",
                                              show_default="none")] = "",
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
) -> None:
    """Create or update the datasource, folder and dashboards in an existing Grafana
    (idempotent: a second run changes nothing)."""
    from schemas.registry import load_registry
    from services.dashboards.provision import ProvisionError, provision

    reg = load_registry(registry)
    try:
        report = provision(url, token, reg, influx_url=influx_url, influx_token=influx_token)
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:  # requests-style connection errors are OSErrors
        raise _fail(f"cannot reach Grafana at {url}: {_errno_reason(exc)}") from exc
    typer.echo(json.dumps({"created": report.created, "updated": report.updated,
                           "unchanged": report.unchanged}, ensure_ascii=False))


@mqtt_app.command("accounts", epilog=example(
    "MQTT_INGEST_PASSWORD=... lifeline mqtt accounts --out deploy/mosquitto/accounts"))
def mqtt_accounts(
    out: Annotated[Path, typer.Option(help="Folder for passwd, acl and gateways.csv.")],
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
    ingest_user: Annotated[str, typer.Option(help="Ingest's account.")] = "lifeline-ingest",
    ingest_password: Annotated[str, typer.Option(
        envvar="MQTT_INGEST_PASSWORD", show_envvar=True, show_default="none",
        help="Ingest's password (12 characters or more).")] = "",
    simulator: Annotated[bool, typer.Option(help="Also the simulator account (tests, "
                                                 "demos; not in production).")] = False,
    simulator_password: Annotated[str, typer.Option(
        envvar="MQTT_SIMULATOR_PASSWORD", show_envvar=True, show_default="none",
        help="The simulator account's password, with --simulator (12 characters or more).")
    ] = "",
) -> None:
    """Mosquitto password file and ACL from the registry: one account per gateway
    (username = facility id) allowed to publish only its own facility's topic; the
    gateways' passwords go to gateways.csv (0600) for provisioning, kept across runs."""
    from schemas.registry import load_registry
    from services.stack.manager import find_binary
    from services.stack.mqtt_accounts import write_accounts

    if len(ingest_password) < 12 or (simulator and len(simulator_password) < 12):
        raise _fail("set MQTT_INGEST_PASSWORD (and MQTT_SIMULATOR_PASSWORD with --simulator), "
                    "12 characters or more")
    accounts = write_accounts(out, load_registry(registry),
                              ingest=(ingest_user, ingest_password),
                              simulator=("lifeline-simulator", simulator_password)
                              if simulator else None,
                              mosquitto_passwd=find_binary("mosquitto_passwd"))
    typer.echo(json.dumps({"gateways": len(accounts), "passwd": str(out / "passwd"),
                           "acl": str(out / "acl"), "credentials": str(out / "gateways.csv")}))


@registry_app.command("scale", epilog=example(
    "lifeline registry scale --factor 50 --out /tmp/registry-x50.json"))
def registry_scale(
    factor: Annotated[int, typer.Option(help="Copies of every facility (1 = unchanged).")],
    out: Annotated[Path, typer.Option(help="The scaled registry (JSON loads fastest).")],
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
) -> None:
    """Write a registry with FACTOR copies of every facility (for load tests: point
    LIFELINE_REGISTRY of every service at it and run `lifeline simulate --scale FACTOR`)."""
    from schemas.registry import RegistryError, load_registry
    from simulators.scale import scale_registry

    try:
        reg = scale_registry(load_registry(registry), factor)
    except (RegistryError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    out.write_text(reg.model_dump_json(exclude_none=True))
    typer.echo(json.dumps({"facilities": len(reg.facilities), "sensors": reg.sensor_count,
                           "out": str(out)}))


class TableFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"


DEFAULT_COLUMNS = ("facility", "sensor", "rule", "level", "value", "source")


def default_thresholds(reg: Registry) -> list[dict[str, str]]:
    """Every shipped default still to be replaced (``default: true``), one row per level of
    a rule and one per composite rule, in registry order."""
    rows = []
    for f in reg.facilities:
        for s in f.sensors:
            for r in s.rules:
                for lv in r.ordered_levels():
                    if lv.default:
                        rows.append({"facility": f.id, "sensor": s.id, "rule": r.key,
                                     "level": lv.level.value, "value": f"{lv.raise_at:g}",
                                     "source": lv.source})
        for c in f.composites:
            if c.default:
                when = " & ".join(
                    f"{cond.signal.value}"
                    f"{f'-{cond.window_s:g}s' if cond.window_s else ''} {cond.op} {cond.value:g}"
                    for cond in c.all_of)
                rows.append({"facility": f.id, "sensor": ",".join(x.sensor for x in c.all_of),
                             "rule": c.id, "level": c.level.value, "value": when,
                             "source": c.source})
    for d in reg.district_rules:
        if d.default:
            level = d.level.value if d.level is not None else "worst"
            rows.append({"facility": ",".join(d.districts) if d.districts else "(every district)",
                         "sensor": "", "rule": d.id, "level": level,
                         "value": f">= {d.min_facilities} at {d.at_least.value}",
                         "source": d.source})
    return rows


def _table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    widths = [max([len(col)] + [len(r[col]) for r in rows]) for col in columns[:-1]]

    def line(cells: list[str]) -> str:
        return "  ".join([c.ljust(w) for c, w in zip(cells, widths, strict=False)]
                         + [cells[-1]]).rstrip()

    return "\n".join([line(list(columns))] + [line([r[c] for c in columns]) for r in rows])


@registry_app.command("check", epilog=example(
    "lifeline registry check", "lifeline registry check --list-defaults --format csv > defaults.csv"))
def registry_check(
    registry: RegistryOption = Path(DEFAULT_REGISTRY),
    list_defaults: Annotated[bool, typer.Option(
        "--list-defaults", help="Print the default thresholds still to be replaced instead of "
                                "the summary: facility, sensor, rule, level, value, source.")
    ] = False,
    fmt: Annotated[TableFormat, typer.Option(
        "--format", help="With --list-defaults: an aligned table or CSV (with a header).")
    ] = TableFormat.TABLE,
) -> None:
    """Validate a registry file and summarise it (warnings on stderr, one a line: windows
    that silence gases or red; rules, gauges and geometry that contradict a manhole's
    geometry)."""
    from collections import Counter

    from schemas.registry import RegistryError, load_registry

    try:
        reg = load_registry(registry)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    warnings = reg.warnings()
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    defaults = default_thresholds(reg)
    if list_defaults:
        if fmt is TableFormat.CSV:
            writer = csv.DictWriter(sys.stdout, fieldnames=DEFAULT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(defaults)
        else:
            typer.echo(_table(defaults, DEFAULT_COLUMNS))
        return
    kinds = Counter(f.kind.value for f in reg.facilities)
    typer.echo(json.dumps({"name": reg.name, "facilities": len(reg.facilities),
                           "sensors": reg.sensor_count, "by_kind": kinds,
                           "default_thresholds_to_replace": len(defaults),
                           "with_geometry": sum(f.geometry is not None for f in reg.facilities),
                           "warnings": len(warnings)}, ensure_ascii=False))


# --------------------------------------------------------------------------- on-call
@oncall_app.command("check", epilog=example("lifeline oncall check",
                                            "lifeline oncall check --oncall /etc/lifeline/oncall.yaml"))
def oncall_check(oncall: OncallOption = Path(DEFAULT_ONCALL)) -> None:
    """Validate an on-call file and summarise it (warnings on stderr)."""
    from schemas.oncall import OnCallError, load_oncall
    from services.core.reload import file_version

    try:
        oncall_version = file_version(oncall)  # as the notifier's /health: config.oncall
        cfg = load_oncall(oncall)
    except OnCallError as exc:
        raise _fail(str(exc)) from exc
    warnings = cfg.warnings()
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(json.dumps({"version": oncall_version, "people": len(cfg.people),
                           "teams": [t.id for t in cfg.teams],
                           "channels": [c.id for c in cfg.channels], "routes": len(cfg.routes),
                           "urgent_channels": cfg.urgent_channels, "warnings": len(warnings)},
                          ensure_ascii=False))


@oncall_app.command("who", epilog=example("lifeline oncall who --hours 12",
                                          "lifeline oncall who --at 2026-11-26T21:00:00+08:00"))
def oncall_who(
    at: Annotated[str | None, typer.Option(help="An instant (ISO 8601 with offset).",
                                           show_default="now")] = None,
    hours: Annotated[float, typer.Option(help="Also list the handovers of the next N hours.")] = 0,
    oncall: OncallOption = Path(DEFAULT_ONCALL),
) -> None:
    """Who is on duty, per team (one JSON line per team)."""
    from datetime import UTC, datetime

    from schemas.oncall import OnCallError, load_oncall
    from services.core.reload import file_version
    from services.notifier.tools import who

    try:
        oncall_version = file_version(oncall)
        cfg = load_oncall(oncall)
        when = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except (OnCallError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if when.tzinfo is None:
        raise _fail("--at needs a UTC offset, e.g. 2026-11-26T21:00:00+08:00")
    for row in who(cfg, when, hours, oncall_version):
        typer.echo(json.dumps(row, ensure_ascii=False))


@oncall_app.command("ack", epilog=example(
    'lifeline oncall ack ALARM_ID --by chief --comment "crew on the way"',
    "lifeline oncall ack ALARM_ID --by chief --resolve --facility DR-BH-001"))
def oncall_ack(
    alarm_id: Annotated[str, typer.Argument(help="The alarm's id (alarm_id).")],
    by: Annotated[str, typer.Option(help="Who acknowledges (a person id or name).")],
    comment: Annotated[str, typer.Option(help="What is being done.", show_default="none")] = "",
    resolve: Annotated[bool, typer.Option(help="Resolve rather than acknowledge.")] = False,
    facility: Annotated[str | None, typer.Option(help="The alarm's facility.",
                                                 show_default="looked up in InfluxDB")] = None,
) -> None:
    """Acknowledge (or resolve) an alarm: its escalation stops."""
    import asyncio

    from schemas.codec import ACK_REQUEST
    from schemas.oncall import AckAction
    from services.core.influx import QueryError
    from services.core.settings import InfluxSettings, KafkaSettings
    from services.notifier.tools import find_facility, send_ack

    if facility is None:
        try:
            facility = asyncio.run(find_facility(load(InfluxSettings), alarm_id))
        except QueryError as exc:
            raise _fail(f"cannot look the alarm up: {exc}; pass --facility") from exc
        if facility is None:
            raise _fail(f"alarm {alarm_id} is not in InfluxDB; pass --facility")
    _quiet_kafka()
    req = asyncio.run(send_ack(load(KafkaSettings), alarm_id, facility, by, comment,
                               AckAction.RESOLVE if resolve else AckAction.ACKNOWLEDGE))
    typer.echo(ACK_REQUEST.encode(req).decode())


@oncall_app.command("history", epilog=example("lifeline oncall history ALARM_ID --days 30"))
def oncall_history(
    alarm_id: Annotated[str, typer.Argument(help="The alarm's id (alarm_id).")],
    days: Annotated[int, typer.Option(help="How far back to look.")] = 90,
) -> None:
    """The audit trail of one alarm: notifications, attempts, acks, escalation steps."""
    import asyncio

    from services.core.influx import QueryError
    from services.core.settings import InfluxSettings
    from services.notifier.tools import history

    try:
        rows = asyncio.run(history(load(InfluxSettings), alarm_id, days))
    except QueryError as exc:
        raise _fail(str(exc)) from exc
    if not rows:
        raise _fail(f"no on-call records for alarm {alarm_id}")
    for row in rows:
        typer.echo(json.dumps(row, ensure_ascii=False))


# --------------------------------------------------------------------------- dead letters
@dlq_app.command("replay", epilog=example(
    "lifeline dlq replay --reason rate_limited --since 2026-11-26T08:00:00+08:00 --dry-run",
    "lifeline dlq replay --reason qos0 --since 2026-11-26T08:00:00+08:00 --facility DR-BH-001"))
def dlq_replay(
    reason: Annotated[str, typer.Option(help="Dead letters with this reason (any of their "
                                             "problems), e.g. rate_limited, qos0, retained.")],
    since: Annotated[str, typer.Option(help="Refused at or after this instant (ISO 8601 with "
                                            "offset, e.g. 2026-11-26T08:00:00+08:00).")],
    until: Annotated[str | None, typer.Option(help="Refused before this instant.",
                                              show_default="now")] = None,
    facility: Annotated[str | None, typer.Option(help="Only this facility's.",
                                                 show_default="every facility")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and count; produce "
                                                            "nothing.")] = False,
    idle: Annotated[float, typer.Option(min=0.5, help=f"{IDLE_HELP} (of the DLQ).")] = 3.0,
) -> None:
    """Send selected dead letters' raw payloads back through ingest's validation: what it
    accepts goes to lifeline.readings as ingest would produce it (original event times, so
    a second replay overwrites), what it refuses is listed on stderr with its reason.
    Prints a one-line JSON summary. Validates with ingest's settings, so the registry is
    ingest's LIFELINE_REGISTRY."""
    import asyncio

    from schemas.deadletter import RejectReason
    from services.core.dlq import Selection, parse_instant, run_replay

    try:
        why = RejectReason(reason)
    except ValueError as exc:
        raise _fail(f"unknown reason {reason!r}; one of "
                    f"{', '.join(r.value for r in RejectReason)}") from exc
    try:
        selection = Selection(why, parse_instant(since), parse_instant(until) if until else None,
                              facility)
    except ValueError as exc:
        raise _fail(str(exc)) from exc

    def refused(row: dict[str, object]) -> None:
        typer.echo(json.dumps(row, ensure_ascii=False), err=True)

    _quiet_kafka()
    report = asyncio.run(run_replay(selection, dry_run=dry_run, idle_s=idle,
                                    on_refused=refused))
    typer.echo(json.dumps(report.summary(), ensure_ascii=False))


def main() -> None:
    try:
        app(prog_name="lifeline")
    except BrokenPipeError:  # outside a command (--help, --version) or at the last flush
        _stdout_gone()
        sys.exit(0)


if __name__ == "__main__":
    main()
