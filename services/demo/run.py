"""``lifeline run``: the whole pipeline on the local stack, shown live in the terminal."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import typer

from schemas import texts
from schemas.codec import ALARM_EVENT
from schemas.registry import Direction, Signal, load_registry
from services.core import topics
from services.core.kafka_tools import follow_in_thread
from services.core.settings import KafkaSettings, state_dir
from services.stack.manager import (
    Ports,
    Stack,
    StackError,
    StackSettings,
    check_dependencies,
    free_port,
)
from services.stack.services import SERVICES, ServiceProcess, stop_all
from simulators.basic import SteadySimulator
from simulators.pacing import paced_steps
from simulators.publisher import Publisher

_COLOURS = {"blue": typer.colors.BLUE, "yellow": typer.colors.YELLOW,
            "orange": typer.colors.MAGENTA, "red": typer.colors.RED}


def _say(text: str, **style: object) -> None:
    typer.secho(f"{time.strftime('%H:%M:%S')}  {text}", **style)  # type: ignore[arg-type]


def _show_alarm(raw: bytes) -> None:
    try:
        ev = ALARM_EVENT.decode(raw)
    except ValueError:  # not an alarm event: the services dead-letter it; the console skips it
        return
    level = ev.level.value if ev.level else "cleared"
    colour = _COLOURS.get(level, typer.colors.GREEN)
    _say(f"ALARM {ev.event.value:<11} {level:<7} {ev.facility_id:<12} {ev.message}",
         fg=colour, bold=ev.event.value != "cleared")


def demo_oncall(source: Path, target: Path, receiver_url: str) -> Path:
    """The shipped on-call file (real teams, rotas, routes) with every channel replaced by
    a webhook to the demo's console receiver: pages are shown, nobody's phone rings."""
    import yaml

    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    # The console stands in for each person's own phone: a personal channel (no one-time
    # code needed to acknowledge from its links), and no SMS channel for codes.
    doc["channels"] = [{"id": c["id"], "type": "webhook", "url": receiver_url,
                        "personal": True} for c in doc["channels"]]
    doc.pop("code_channel", None)
    doc.pop("urgent_channels", None)
    target.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return target


class ConsoleReceiver:
    """A local webhook endpoint that prints every page it receives (the demo's phone)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/page"

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        from aiohttp import web

        async def page(request: web.Request) -> web.Response:
            body = await request.json()
            self.received += 1
            for a in body.get("alarms", []):
                if str(a.get("notification", "")).startswith("order_"):  # a work order's
                    head, *lines = str(body.get("text", "")).splitlines()
                    _say(f"ORDER → {body.get('person')} {head}", fg=typer.colors.MAGENTA,
                         bold=True)
                    for text in lines:
                        _say(f"      {text}", dim=True)
                    continue
                place = texts.facility_words(
                    facility_id=a["facility_id"], name=a.get("facility_name"),
                    name_zh=a.get("facility_name_zh"), district=a.get("district"),
                    district_zh=a.get("district_zh"))
                what = texts.rule_words(a["rule"], a.get("metric"))
                _say(f"PAGE  → {body.get('person')} [{a.get('notification')}] "
                     f"{texts.level_words(a.get('level'))} {place} [{a['facility_id']}] "
                     f"{what} [{a['sensor']}]", fg=typer.colors.CYAN, bold=True)
                if a.get("ack_url") and a.get("notification") != "cleared":
                    _say(f"      acknowledge: {a['ack_url']}", dim=True)
            return web.Response(status=204)

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/page", page)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(serve())


def run_demo(*, registry: Path, duration: float, breach_every: float,
             oncall: Path = Path("deploy/oncall/wenzhou-bay.yaml")) -> int:
    import signal

    from services.core.logging import configure

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (kill, a supervisor) stops in order, as Ctrl-C

    signal.signal(signal.SIGTERM, interrupted)
    configure("WARNING")
    missing = check_dependencies()
    if missing:
        typer.secho("The local stack is not installed:\n  - " + "\n  - ".join(missing)
                    + "\nRun: scripts/bootstrap.sh", fg=typer.colors.RED, err=True)
        return 1
    reg = load_registry(registry)
    settings = StackSettings()
    stack = Stack(state_dir(), Ports.from_settings(settings), partitions=settings.partitions)
    owned = not stack.running()
    if not owned:
        typer.secho(f"using the stack already running in {stack.state}; "
                    "`lifeline stack down` stops it", fg=typer.colors.YELLOW)
        from services.stack.manager import load_info

        info = load_info(stack.state)
        if info is not None:
            stack.ports = info.ports
    t0 = time.monotonic()
    try:
        if owned:
            stack.up()
    except StackError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        return 1
    env = {**stack.env(), "LIFELINE_REGISTRY": str(registry.resolve())}
    procs = {n: ServiceProcess(n, env, stack.logs, free_port()) for n in SERVICES}
    phone = ConsoleReceiver()
    phone.start()
    notifier_port, public_port = free_port(), free_port()
    procs["notifier"] = ServiceProcess("notifier", {
        **env, "LIFELINE_NOTIFIER_ONCALL": str(demo_oncall(oncall, stack.state / "oncall.yaml",
                                                           phone.url)),
        "LIFELINE_NOTIFIER_PUBLIC_PORT": str(public_port),
        "LIFELINE_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{public_port}"},
        stack.logs, notifier_port)
    # Work orders: opened from orange alarms, dispatched to the owner unit's contact (the
    # console stands in for the phones here too), the order page on a port of its own.
    order_page = free_port()
    procs["orders"] = ServiceProcess("orders", {
        **env, "LIFELINE_ORDERS_ONCALL": str(stack.state / "oncall.yaml"),
        "LIFELINE_ORDERS_PUBLIC_PORT": str(order_page),
        "LIFELINE_ORDERS_PUBLIC_URL": f"http://127.0.0.1:{order_page}",
        "LIFELINE_ORDERS_TICK_S": "2"}, stack.logs, free_port())
    stop = threading.Event()
    followers: list[threading.Thread] = []
    pub: Publisher | None = None
    try:
        _say(f"stack healthy in {time.monotonic() - t0:.1f}s; starting services "
             f"(logs in {stack.logs})")
        for p in procs.values():
            p.start()
        for name, p in procs.items():
            p.wait_ready(90, ready=None if name == "ingest" else
                         lambda b: b and b["counters"].get("assigned_partitions", 0) > 0)
            _say(f"{name} ready — health {p.health_url}")
        influx = env["LIFELINE_INFLUX_URL"]
        query = "SELECT count(value) FROM reading"
        typer.secho(
            "\nWhere the data is:\n"
            f"  InfluxDB  {influx}  database 'lifeline': reading (raw, 30 d), long.reading_1m, "
            "long.alarm_event, long.alarm_state\n"
            f"    curl -sG {influx}/query --data-urlencode db=lifeline --data-urlencode 'q={query}'\n"
            f"  Kafka     {env['LIFELINE_KAFKA_BOOTSTRAP']}  topics {', '.join(topics.ALL)}\n"
            f"  MQTT      127.0.0.1:{env['LIFELINE_MQTT_PORT']}  (users in {stack.state}/stack.env)\n"
            f"  Logs      {stack.logs}\n"
            "  Alarms    lifeline tail alarms   (rejects: lifeline tail dlq)\n"
            f"  On-call   pages are printed here (PAGE →); teams and rotas from {oncall}: "
            "lifeline oncall who\n"
            "  Orders    work orders from orange alarms, dispatched to the owner unit (ORDER →, "
            "with the order page's link): lifeline orders list\n", fg=typer.colors.CYAN)

        kafka = KafkaSettings(bootstrap=env["LIFELINE_KAFKA_BOOTSTRAP"], flavor="tansu")
        followers.append(follow_in_thread(kafka, topics.ALARMS, _show_alarm, stop,
                                          name="demo-alarms"))

        sim = SteadySimulator(reg)
        pub = Publisher("127.0.0.1", int(env["LIFELINE_MQTT_PORT"]),
                        env["LIFELINE_SIMULATOR_MQTT_USERNAME"],
                        env["LIFELINE_SIMULATOR_MQTT_PASSWORD"])
        # Sensors whose value rule raises on one reading, so a short push shows an alarm.
        breachable = itertools.cycle([
            s.id for f in reg.facilities for s in f.sensors
            if any(r.signal is Signal.VALUE and r.direction is Direction.UPPER
                   and r.raise_after_count == 1 and r.raise_after_s == 0 for r in s.rules)])
        start = time.monotonic()
        next_status = next_breach = start + 5
        held: tuple[str, float] | None = None
        for tick in paced_steps(time.time()):
            if stop.is_set():
                break
            now = time.monotonic()
            if duration and now - start >= duration:
                break
            for topic, payload in sim.reports(tick):
                pub.publish(topic, payload)
            if held and now >= held[1]:
                sim.release(held[0])
                _say(f"simulator: {held[0]} back to normal")
                held = None
            if breach_every and now >= next_breach and held is None:
                sid = next(breachable)
                v = sim.breach(sid)
                _say(f"simulator: pushing {sid} to {v:g} for {breach_every / 2:.0f}s",
                     fg=typer.colors.WHITE)
                held = (sid, now + breach_every / 2)
                next_breach = now + breach_every
            if now >= next_status:
                _status(pub, procs)
                next_status = now + 5
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        return 1
    finally:
        # Order matters (the terminal's Ctrl-C reached only this process: the children
        # have their own process groups): the simulator and the alarm follower first, then
        # the services while their brokers still run, then the brokers.
        stopping = time.monotonic()
        stop.set()
        _say("stopping …")
        if pub is not None:
            pub.close()
        for t in followers:
            t.join(2.0)
        if pub is not None:
            _status(pub, procs)
        killed = stop_all(list(procs.values()))
        if owned:
            stack.down()
        _say(f"stopped in {time.monotonic() - stopping:.1f}s"
             + (f" ({', '.join(killed)} killed after the grace period)" if killed else "")
             + f". Data was in {stack.state} (InfluxDB data stays there; Tansu keeps "
               "Kafka in memory only).")
    return 0


def _status(pub: Publisher, procs: dict[str, ServiceProcess]) -> None:
    i, p, w = (procs[n].counters() for n in SERVICES)
    n = procs["notifier"].counters() if "notifier" in procs else {}
    _say(f"published {pub.published} reports | ingest accepted {i.get('accepted_readings', 0)} "
         f"readings, rejected {i.get('rejected_messages', 0)} | processor evaluated "
         f"{p.get('processed_readings', 0)} (lag {p.get('lag', 0)}) | writer stored "
         f"{w.get('stored_points', 0)} points (lag {w.get('lag', 0)}) | notifier sent "
         f"{n.get('messages_sent', 0)} messages", dim=True)


__all__ = ["run_demo"]
