"""Child processes that do not outlive their owner.

A foreground child gets ``PR_SET_PDEATHSIG`` so it receives SIGTERM if the owner dies,
even by ``kill -9``, and its own process group: a terminal's Ctrl-C goes to the whole
foreground group, and the owner — not the terminal — must decide the order in which
things stop (services before the brokers they need to shut down cleanly). A daemon child
(``lifeline stack up``) is started in its own session and tracked by a pid file that
records its command line, so ``stack down`` never signals a recycled pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, daemon: bool = False, nice: int = 0,
          user: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log`` (``nice``: a lower CPU
    priority, for background work sharing the machine with the alarm path; ``user``: run
    as that account — root only — for a server that refuses to run as root)."""
    log.parent.mkdir(parents=True, exist_ok=True)

    def child() -> None:  # between fork and exec
        if not daemon:
            _die_with_parent()
        if nice:
            os.nice(nice)

    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd,
            start_new_session=daemon,
            process_group=None if daemon else 0,
            preexec_fn=child if (nice or not daemon) else None,
            # As another account: its own group only, never root's (``user`` needs root).
            user=user, group=_group_of(user) if user else None,
            extra_groups=[] if user else None,
        )


def _group_of(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def terminate_all(pids: Sequence[int], *, grace: float) -> list[int]:
    """SIGTERM every process at once, wait up to ``grace`` for all of them, SIGKILL the
    rest; returns the pids that had to be killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    live = list(pids)
    while live and time.monotonic() < deadline:
        for pid in live:
            _reap(pid)
        live = [pid for pid in live if alive(pid)]
        if live:
            time.sleep(0.05)
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in live:
        for _ in range(100):
            _reap(pid)
            if not alive(pid):
                break
            time.sleep(0.02)
    return live


def cmdline(pid: int) -> str | None:
    """The command line of a live process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def terminate(pid: int, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> bool:
    """``sig`` (SIGTERM), wait up to ``timeout``, then SIGKILL. True if the process is
    gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.02)
    return not alive(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
