"""The local stack's PostgreSQL: a cluster of its own under the state folder, for the work
orders' current state and history (issue 19; decision 0021).

Debian's ``postgresql`` package provides the server binaries (``/usr/lib/postgresql/<major>/
bin``); the package's own cluster is not used. ``initdb`` runs once per state folder
(superuser ``lifeline``, SCRAM password from the stack's ``secrets.json``, UTF-8, C
collation), the server listens on loopback only on the stack's port with no Unix socket,
and the database ``lifeline`` is created on first start.

PostgreSQL refuses to run as root. When the stack is started by root (CI, containers), the
cluster is owned by and run as the package's ``postgres`` account; the folders leading to
the data folder get the traverse bit for others where they lack it (``o+x``: entering, not
listing — pytest's and ``mktemp``'s folders are ``0700``), said in a log line.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path

from services.core.errors import LifelineError
from services.core.logging import get_logger

log = get_logger("lifeline.stack")

SUPERUSER = "lifeline"
DATABASE = "lifeline"
# Neither a superuser: the orders service owns the database (it makes its tables); Grafana's
# data source reads the orders and their history only (the orders service grants it).
ORDERS_ROLE = "lifeline_orders"
READER_ROLE = "lifeline_reader"
ROLES = (ORDERS_ROLE, READER_ROLE)
RUN_AS_WHEN_ROOT = "postgres"  # the account Debian's package creates


class PostgresMissing(LifelineError, RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def binary(name: str) -> str:
    """``initdb`` or ``postgres`` of the newest PostgreSQL installed by Debian's package."""
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*/bin") if (p / name).exists()),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not majors:
        raise PostgresMissing(f"PostgreSQL's {name} not found under {root} (Debian package "
                              "postgresql); run scripts/bootstrap.sh, which installs it")
    return str(majors[-1] / name)


def run_as() -> str | None:
    """The account the server runs as: ``postgres`` when we are root, else ourselves."""
    return RUN_AS_WHEN_ROOT if os.geteuid() == 0 else None


def _traversable(path: Path) -> None:
    """Give every folder above ``path`` the traverse bit for others where it lacks it."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            log.info("stack.postgres_traverse", folder=str(parent),
                     why="the postgres account must reach its data folder")


def ensure_cluster(data: Path, password: str, log_file: Path) -> None:
    """``initdb`` into ``data`` unless a cluster is there already."""
    if (data / "PG_VERSION").exists():
        return
    user = run_as()
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    pwfile = data.parent / "initdb.pw"
    pwfile.unlink(missing_ok=True)  # left by a kill -9 of an earlier start
    fd = os.open(pwfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # owner only
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    try:
        if user is not None:
            account = pwd.getpwnam(user)
            _traversable(data)
            for p in (data, pwfile):
                os.chown(p, account.pw_uid, account.pw_gid)
        argv = [binary("initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(pwfile),
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]
        with open(log_file, "ab") as out:
            done = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=120,
                user=user, group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None)
        if done.returncode != 0:
            raise PostgresMissing(f"initdb failed (exit {done.returncode}); see {log_file}")
    finally:
        pwfile.unlink(missing_ok=True)


def server_argv(data: Path, port: int) -> list[str]:
    """The server on loopback only, on ``port``, without a Unix socket; settings sized for a
    small local store sharing the machine."""
    return [binary("postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={port}", "-c", "unix_socket_directories=", "-c", "max_connections=50",
            "-c", "shared_buffers=32MB", "-c", "fsync=on", "-c", "log_min_messages=warning"]


def dsn(port: int, password: str, database: str = DATABASE, user: str = SUPERUSER) -> str:
    from urllib.parse import quote

    return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{port}/{database}"


def ready(port: int, password: str, roles: dict[str, str] | None = None) -> bool:
    """The server answers, and the database ``lifeline`` exists (created if not), with the
    ``roles`` (name → password; created or their password set) — the orders role owning
    the database and every table in it (a state folder from before the roles had its
    tables made by the superuser)."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(dsn(port, password, "postgres"), connect_timeout=2,
                             autocommit=True) as conn:
            for role, pw in (roles or {}).items():
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                      (role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                     "PASSWORD {}").format(sql.Identifier(role),
                                                           sql.Literal(pw)))
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                 (DATABASE,)).fetchone()
            owner = ORDERS_ROLE if roles and ORDERS_ROLE in roles else SUPERUSER
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(owner)))
            elif owner != SUPERUSER:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(owner)))
        if roles and ORDERS_ROLE in roles:
            with psycopg.connect(dsn(port, password), connect_timeout=2, autocommit=True) as db:
                for (table,) in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = "
                                           "'public' AND tableowner <> %s",
                                           (ORDERS_ROLE,)).fetchall():
                    db.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                        sql.Identifier(table), sql.Identifier(ORDERS_ROLE)))
        return True
    except psycopg.OperationalError:
        return False
