"""``lifeline``: one command-line entry point, one subcommand per service and tool."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic_settings import SettingsConfigDict

from services.core.settings import (
    DEFAULT_REGISTRY,
    MqttSettings,
    RegistrySettings,
    _Group,
    load,
    state_dir,
)

if TYPE_CHECKING:
    from schemas.alarm import AlarmEvent
    from schemas.registry import Registry
    from simulators.publisher import Publisher

app = typer.Typer(help=__doc__ or "", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local embedded stack: Mosquitto, Tansu (Kafka API), influxd.",
                        no_args_is_help=True)
schemas_app = typer.Typer(help="The contracts: export JSON Schemas for device vendors.",
                          no_args_is_help=True)
registry_app = typer.Typer(help="The facility registry (YAML).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(schemas_app, name="schemas")
grafana_app = typer.Typer(help="Grafana dashboards generated from the registry.",
                          no_args_is_help=True)
app.add_typer(registry_app, name="registry")
app.add_typer(grafana_app, name="grafana")
mqtt_app = typer.Typer(help="MQTT broker accounts and ACLs.", no_args_is_help=True)
app.add_typer(mqtt_app, name="mqtt")
oncall_app = typer.Typer(help="On-call: rotas, acknowledgements, the audit trail.",
                         no_args_is_help=True)
app.add_typer(oncall_app, name="oncall")
dlq_app = typer.Typer(help="The dead-letter topic lifeline.readings.dlq: replay refused reports.",
                      no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


class SimulatorMqtt(_Group):
    """The simulator's MQTT account (``LIFELINE_SIMULATOR_MQTT_*``)."""

    model_config = SettingsConfigDict(env_prefix="LIFELINE_SIMULATOR_MQTT_", extra="ignore",
                                      frozen=True)
    username: str = "lifeline-simulator"
    password: str = ""


def _fail(text: str, code: int = 1) -> typer.Exit:
    typer.secho(text, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# --------------------------------------------------------------------------- stack
@stack_app.command("up")
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


@stack_app.command("status")
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


@stack_app.command("down")
def stack_down() -> None:
    """Stop every component of the stack started in LIFELINE_STATE_DIR."""
    from services.stack.manager import Stack, load_info

    info = load_info(state_dir())
    stopped = Stack(state_dir(), info.ports if info else None).down()
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("check")
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
@app.command()
def ingest() -> None:
    """MQTT → Kafka: validate telemetry, forward reports to lifeline.readings, rejects to the DLQ."""
    from services.core.logging import configure
    from services.ingest.app import main

    configure(load(RegistrySettings).log_level, service="ingest")
    main()


@app.command()
def processor() -> None:
    """Faust alarm engine: lifeline.readings → threshold rules → lifeline.alarms."""
    from services.processor.app import main

    main()


@app.command()
def writer() -> None:
    """Faust writer: readings and alarm events → InfluxDB, batched, with backpressure."""
    from services.writer.app import main

    main()


@app.command()
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


@app.command()
def simulate(
    registry: Annotated[Path, typer.Option(help="Registry YAML.")] = Path(DEFAULT_REGISTRY),
    scenario: Annotated[str | None, typer.Option(
        help="A scenario name (simulators/scenarios/NAME.yaml) or file: facility physics, "
             "weather, incidents and faults with ground truth.")] = None,
    duration: Annotated[float, typer.Option(help="Simulated seconds to run (0 = forever; a "
                                                 "scenario has its own).")] = 0,
    speed: Annotated[str, typer.Option(help="Simulated seconds per real second, e.g. 60x.")
                     ] = "1x",
    scale: Annotated[int, typer.Option(help="Copies of every facility (load tests); the "
                                            "services need the same registry: `lifeline "
                                            "registry scale`.")] = 1,
    truth: Annotated[Path | None, typer.Option(help="Scenario: where to write the ground "
                                                    "truth for `lifeline score` (default: "
                                                    "<state>/truth/<scenario>.json).")] = None,
    t0: Annotated[float | None, typer.Option(help="Scenario: epoch second of its start "
                                                  "(default: so that it ends now).")] = None,
    breach: Annotated[list[str] | None, typer.Option(
        help="SENSOR or SENSOR=VALUE to hold over its worst threshold (repeatable).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (reproducible values).")] = 1,
) -> None:
    """Publish telemetry over MQTT: plausible steady values for every facility, or a
    scenario's physics with incidents and faults (``--scenario``)."""
    from schemas.registry import load_registry
    from simulators.publisher import Publisher, PublishError

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
        _simulate_scenario(reg, scenario, pace, pub, truth or _truth_file(scenario), t0)
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
    # Faster than real time starts in the past, so event times never run ahead of now.
    t = time.time() - (duration if pace > 1 and duration else 0)
    end = t + duration if duration else float("inf")
    wall0, sim0 = time.monotonic(), t
    try:
        while t < end:
            for topic, payload in sim.reports(t):
                pub.publish(topic, payload)
            t += 1.0
            lag = (t - sim0) / pace - (time.monotonic() - wall0)
            if lag > 0:
                time.sleep(lag)
    except KeyboardInterrupt:
        pass
    finally:
        pub.flush(30)
        pub.close()
    typer.echo(f"published {pub.published} reports")


def _truth_file(scenario: str) -> Path:
    return state_dir() / "truth" / f"{Path(scenario).stem}.json"


def _simulate_scenario(reg: Registry, name: str, pace: float, pub: Publisher,
                       truth: Path | None, t0: float | None) -> None:
    from zoneinfo import ZoneInfo

    from schemas.scenario import ScenarioError, load_scenario
    from simulators.scenario import ScenarioRun, scenario_path, start_epoch

    try:
        sc = load_scenario(scenario_path(name))
    except ScenarioError as exc:
        raise _fail(str(exc)) from exc
    if t0 is None:
        # Event times must never run ahead of the wall clock (ingest refuses the future):
        # the scenario starts in the past so that its end is reached just as it is published.
        latest = time.time() - sc.duration_s * (1 - 1 / pace)
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
        for t, topic, payload in run.reports():
            ahead = t / pace - (time.monotonic() - wall0)
            if ahead > 0.05:
                time.sleep(ahead)
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


@app.command()
def score(
    scenario: Annotated[str, typer.Option(help="The scenario's name or file.")],
    truth: Annotated[Path | None, typer.Option(
        help="The ground truth `simulate` wrote (default: <state>/truth/<scenario>.json).")
    ] = None,
    source: Annotated[str, typer.Option("--from", help="Where the alarms are: kafka "
                                                       "(lifeline.alarms) or influx.")] = "kafka",
    out: Annotated[Path | None, typer.Option(help="Folder for report.json and the plots "
                                                  "(default: <state>/score/<scenario>).")
                   ] = None,
    idle: Annotated[float, typer.Option(help="Kafka: stop after N s without records.")] = 3.0,
) -> None:
    """Score the alarm engine against a scenario's ground truth: detection per incident
    and delay, false alarms per 1,000 sensor-hours, sensor faults reported as facility
    alarms. Prints a table, writes report.json and one PNG per incident; exit 1 if the
    scenario's expectations are not met."""
    from schemas.registry import load_registry
    from schemas.scenario import ScenarioError, load_scenario
    from simulators.plot import plot_incidents
    from simulators.scenario import scenario_path
    from simulators.scoring import score as score_alarms

    try:
        sc = load_scenario(scenario_path(scenario))
        doc = json.loads((truth or _truth_file(scenario)).read_text())
    except (ScenarioError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    reg = load_registry(load(RegistrySettings).registry)
    alarms = _alarms_from(source, float(doc["t0"]), idle)
    result = score_alarms(sc, float(doc["t0"]), int(doc["sensors"]), alarms,
                          {f.id: f.district for f in reg.facilities}, set(doc["facilities"]))
    folder = out or state_dir() / "score" / sc.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(result.as_dict(), indent=2))
    plots = plot_incidents(sc, reg, doc, alarms, folder)
    typer.echo(result.table())
    typer.echo(f"report: {folder / 'report.json'}; plots: {len(plots)} in {folder}")
    if not result.passed(sc):
        raise typer.Exit(1)


def _alarms_from(source: str, t0: float, idle: float) -> list[AlarmEvent]:
    import asyncio

    from schemas.alarm import AlarmEvent

    if source == "kafka":
        from services.core import topics
        from services.core.kafka_tools import read_topic
        from services.core.settings import KafkaSettings

        raw: list[bytes] = []
        asyncio.run(read_topic(load(KafkaSettings), topics.ALARMS, raw.append,
                               idle_timeout=idle))
        return [AlarmEvent.model_validate_json(r) for r in raw]
    if source != "influx":
        raise _fail(f"--from must be kafka or influx, not {source!r}")
    from services.core.influxql import QueryError, query
    from services.core.settings import InfluxSettings

    q = f'SELECT * FROM "long"."alarm_event" WHERE time >= {int(t0 * 1000)}ms'  # noqa: S608 — a number
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


@app.command()
def run(
    registry: Annotated[Path, typer.Option(help="Registry YAML.")] = Path(DEFAULT_REGISTRY),
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = Ctrl-C).")] = 0,
    breach_every: Annotated[float, typer.Option(
        help="Every N seconds push one sensor over its thresholds for N/2 s (0 = never).")] = 40,
    oncall: Annotated[Path, typer.Option(help="On-call YAML (its channels are replaced by a "
                                              "local receiver that prints the pages).")] = Path(
        "deploy/oncall/wenzhou-bay.yaml"),
) -> None:
    """The main job on the local stack: stack, ingest, processor, writer, notifier and the
    simulator, with readings counted, alarms and pages shown live. Ctrl-C stops everything."""
    from services.stack.demo import run_demo

    sys.exit(run_demo(registry=registry, duration=duration, breach_every=breach_every,
                      oncall=oncall))


@app.command()
def bench(
    sensors: Annotated[int, typer.Option(help="Sensors (10 per gateway).")] = 20000,
    interval: Annotated[float, typer.Option(help="Seconds between a gateway's reports.")] = 10,
    duration: Annotated[float, typer.Option(help="Seconds of sustained load.")] = 60,
    out: Annotated[Path | None, typer.Option(help="Write the full result (JSON) here.")] = None,
) -> None:
    """The whole local stack under sustained load: rates accepted/evaluated/stored,
    publish→alarm/stored/notification latency, lag, CPU and memory per component, loss,
    beside a plain MQTT→aiokafka baseline measured in the same run (docs/benchmarks.md)."""
    import tempfile

    from services.core.logging import configure
    from services.stack.loadbench import run_bench

    configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="lifeline-bench-") as tmp:
        result = run_bench(sensors=sensors, interval_s=interval, duration_s=duration,
                           state=Path(tmp), keep_logs=out.with_suffix(".logs") if out else None)
    text = json.dumps(result, indent=2)
    if out is not None:
        out.write_text(text)
    summary = {k: v for k, v in result.items() if k != "samples"}
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(help="alarms, dlq or readings (or a topic name).")],
    limit: Annotated[int, typer.Option(help="Stop after N records (0 = follow).")] = 0,
    timeout: Annotated[float, typer.Option(help="Give up after N s without records.")] = 0,
) -> None:
    """Print records of a Kafka topic from the beginning, one JSON per line."""
    import asyncio

    from services.core import topics
    from services.core.kafka_tools import read_topic
    from services.core.settings import KafkaSettings

    name = {"alarms": topics.ALARMS, "dlq": topics.READINGS_DLQ,
            "readings": topics.READINGS}.get(topic, topic)

    def show(value: bytes) -> None:
        typer.echo(value.decode(errors="replace"))

    asyncio.run(read_topic(load(KafkaSettings), name, show, limit=limit, idle_timeout=timeout))


@schemas_app.command("export")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Folder for the JSON Schema files.")] = Path("schemas/json"),
) -> None:
    """Write the JSON Schema of every contract (committed under schemas/json/)."""
    from schemas.export import export_all

    for path in export_all(out):
        typer.echo(f"wrote {path}")


@grafana_app.command("generate")
def grafana_generate(
    registry: Annotated[Path, typer.Option(help="Registry YAML/JSON.")] = Path(DEFAULT_REGISTRY),
    out: Annotated[Path, typer.Option(help="Folder for the dashboards.")] = Path(
        "grafana/dashboards"),
) -> None:
    """Write the dashboards (JSON, committed under grafana/dashboards/) for the registry."""
    from schemas.registry import load_registry
    from services.dashboards.generate import write

    for path in write(load_registry(registry), out):
        typer.echo(f"wrote {path}")


@grafana_app.command("provision")
def grafana_provision(
    url: Annotated[str, typer.Option(help="Grafana base URL, e.g. http://grafana:3000")],
    token: Annotated[str, typer.Option(envvar="LIFELINE_GRAFANA_TOKEN",
                                       help="Grafana service-account token (env: "
                                            "LIFELINE_GRAFANA_TOKEN).")],
    influx_url: Annotated[str, typer.Option(help="InfluxDB URL as Grafana reaches it.")],
    influx_token: Annotated[str, typer.Option(envvar="LIFELINE_INFLUX_TOKEN",
                                              help="InfluxDB token for the datasource "
                                                   "(env: LIFELINE_INFLUX_TOKEN).")] = "",
    registry: Annotated[Path, typer.Option(help="Registry YAML/JSON.")] = Path(DEFAULT_REGISTRY),
) -> None:
    """Create or update the datasource, folder and dashboards in an existing Grafana
    (idempotent: a second run changes nothing)."""
    from schemas.registry import load_registry
    from services.dashboards.provision import ProvisionError, provision

    try:
        report = provision(url, token, load_registry(registry), influx_url=influx_url,
                           influx_token=influx_token)
    except ProvisionError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps({"created": report.created, "updated": report.updated,
                           "unchanged": report.unchanged}, ensure_ascii=False))


@mqtt_app.command("accounts")
def mqtt_accounts(
    out: Annotated[Path, typer.Option(help="Folder for passwd, acl and gateways.csv.")],
    registry: Annotated[Path, typer.Option(help="Registry YAML/JSON.")] = Path(DEFAULT_REGISTRY),
    ingest_user: Annotated[str, typer.Option(help="Ingest's account.")] = "lifeline-ingest",
    ingest_password: Annotated[str, typer.Option(
        envvar="MQTT_INGEST_PASSWORD", help="Ingest's password (env: MQTT_INGEST_PASSWORD).")
    ] = "",
    simulator: Annotated[bool, typer.Option(help="Also the simulator account (tests, "
                                                 "demos; not in production).")] = False,
    simulator_password: Annotated[str, typer.Option(envvar="MQTT_SIMULATOR_PASSWORD")] = "",
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


@registry_app.command("scale")
def registry_scale(
    path: Annotated[Path, typer.Argument(help="Registry YAML/JSON.")],
    factor: Annotated[int, typer.Option(help="Copies of every facility (1 = unchanged).")],
    out: Annotated[Path, typer.Option(help="The scaled registry (JSON loads fastest).")],
) -> None:
    """Write a registry with FACTOR copies of every facility (for load tests: point
    LIFELINE_REGISTRY of every service at it and run `lifeline simulate --scale FACTOR`)."""
    from schemas.registry import RegistryError, load_registry
    from simulators.scale import scale_registry

    try:
        reg = scale_registry(load_registry(path), factor)
    except (RegistryError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    out.write_text(reg.model_dump_json(exclude_none=True))
    typer.echo(json.dumps({"facilities": len(reg.facilities), "sensors": reg.sensor_count,
                           "out": str(out)}))


@registry_app.command("check")
def registry_check(path: Annotated[Path, typer.Argument(help="Registry YAML.")]) -> None:
    """Validate a registry file and summarise it."""
    from collections import Counter

    from schemas.registry import RegistryError, load_registry

    try:
        reg = load_registry(path)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    kinds = Counter(f.kind.value for f in reg.facilities)
    defaults = sum(1 for f in reg.facilities for s in f.sensors for r in s.rules for lv in r.levels
                   if lv.default) + sum(1 for f in reg.facilities for c in f.composites if c.default)
    warnings = reg.warnings()
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(json.dumps({"name": reg.name, "facilities": len(reg.facilities),
                           "sensors": reg.sensor_count, "by_kind": kinds,
                           "default_thresholds_to_replace": defaults,
                           "warnings": len(warnings)}, ensure_ascii=False))


# --------------------------------------------------------------------------- on-call
def _oncall_file(path: Path | None) -> Path:
    from services.notifier.config import NotifierSettings

    return path or load(NotifierSettings).oncall


@oncall_app.command("check")
def oncall_check(
    path: Annotated[Path | None, typer.Argument(help="On-call YAML (default: "
                                                     "LIFELINE_NOTIFIER_ONCALL).")] = None,
) -> None:
    """Validate an on-call file and summarise it."""
    from schemas.oncall import OnCallError, load_oncall

    try:
        cfg = load_oncall(_oncall_file(path))
    except OnCallError as exc:
        raise _fail(str(exc)) from exc
    warnings = cfg.warnings()
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(json.dumps({"people": len(cfg.people), "teams": [t.id for t in cfg.teams],
                           "channels": [c.id for c in cfg.channels], "routes": len(cfg.routes),
                           "urgent_channels": cfg.urgent_channels, "warnings": len(warnings)},
                          ensure_ascii=False))


@oncall_app.command("who")
def oncall_who(
    at: Annotated[str | None, typer.Option(help="An instant (ISO 8601 with offset); "
                                                "default now.")] = None,
    hours: Annotated[float, typer.Option(help="Also list the handovers of the next N hours.")] = 0,
    path: Annotated[Path | None, typer.Option("--oncall", help="On-call YAML.")] = None,
) -> None:
    """Who is on duty, per team (one JSON line per team)."""
    from datetime import UTC, datetime

    from schemas.oncall import OnCallError, load_oncall
    from services.notifier.tools import who

    try:
        cfg = load_oncall(_oncall_file(path))
        when = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except (OnCallError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if when.tzinfo is None:
        raise _fail("--at needs a UTC offset, e.g. 2026-11-26T21:00:00+08:00")
    for row in who(cfg, when, hours):
        typer.echo(json.dumps(row, ensure_ascii=False))


@oncall_app.command("ack")
def oncall_ack(
    alarm_id: Annotated[str, typer.Argument(help="The alarm's id (alarm_id).")],
    by: Annotated[str, typer.Option(help="Who acknowledges (a person id or name).")],
    comment: Annotated[str, typer.Option(help="What is being done.")] = "",
    resolve: Annotated[bool, typer.Option(help="Resolve rather than acknowledge.")] = False,
    facility: Annotated[str | None, typer.Option(help="The alarm's facility (looked up in "
                                                      "InfluxDB when omitted).")] = None,
) -> None:
    """Acknowledge (or resolve) an alarm: its escalation stops."""
    import asyncio

    from schemas.oncall import AckAction
    from services.core.influxql import QueryError
    from services.core.settings import InfluxSettings, KafkaSettings
    from services.notifier.tools import find_facility, send_ack

    if facility is None:
        try:
            facility = asyncio.run(find_facility(load(InfluxSettings), alarm_id))
        except QueryError as exc:
            raise _fail(f"cannot look the alarm up: {exc}; pass --facility") from exc
        if facility is None:
            raise _fail(f"alarm {alarm_id} is not in InfluxDB; pass --facility")
    req = asyncio.run(send_ack(load(KafkaSettings), alarm_id, facility, by, comment,
                               AckAction.RESOLVE if resolve else AckAction.ACKNOWLEDGE))
    typer.echo(req.model_dump_json())


@oncall_app.command("history")
def oncall_history(
    alarm_id: Annotated[str, typer.Argument(help="The alarm's id (alarm_id).")],
    days: Annotated[int, typer.Option(help="How far back to look.")] = 90,
) -> None:
    """The audit trail of one alarm: notifications, attempts, acks, escalation steps."""
    import asyncio

    from services.core.influxql import QueryError
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
@dlq_app.command("replay")
def dlq_replay(
    reason: Annotated[str, typer.Option(help="Dead letters with this reason (any of their "
                                             "problems), e.g. rate_limited, qos0, retained.")],
    since: Annotated[str, typer.Option(help="Refused at or after this instant (ISO 8601 with "
                                            "offset, e.g. 2026-11-26T08:00:00+08:00).")],
    until: Annotated[str | None, typer.Option(help="Refused before this instant.")] = None,
    facility: Annotated[str | None, typer.Option(help="Only this facility's.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and count; produce "
                                                            "nothing.")] = False,
    idle: Annotated[float, typer.Option(min=0.5, help="Stop reading the DLQ after N s "
                                                      "without records.")] = 3.0,
) -> None:
    """Send selected dead letters' raw payloads back through ingest's validation: what it
    accepts goes to lifeline.readings as ingest would produce it (original event times, so
    a second replay overwrites), what it refuses is listed on stderr with its reason.
    Prints a one-line JSON summary."""
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

    report = asyncio.run(run_replay(selection, dry_run=dry_run, idle_s=idle,
                                    on_refused=refused))
    typer.echo(json.dumps(report.summary(), ensure_ascii=False))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
