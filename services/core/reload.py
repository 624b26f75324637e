"""Configuration files a service runs on — the registry, the on-call file — reloaded when
they change, validated first.

Every service holds a :class:`WatchedFile` per file. ``check()`` (or ``check_async()`` from an
event loop: reading and validating a large registry takes seconds, so it runs in a thread)
looks at the file's inode, modification time and size; when they moved it reads the bytes
and compares their digest with the version in use. The inode matters: Kubernetes updates a
mounted ConfigMap by swapping a ``..data`` symlink to a new folder (``stat`` follows the
symlinks to the new file), and ``mv new old`` keeps neither. A new version is loaded with the
file's own loader (the same validation as at start-up); if that fails (or ``on_change``
refuses it), the service keeps the version it has, logs ``<name>.reload_refused`` with the
reason, counts ``<name>_reloads_refused`` and shows a health *warning* ``<name>`` (status
``degraded``, still 200: the service goes on working with the version it has, and a bad
push must not take every replica out of its Service) until a good file is loaded. A good
version is handed to ``on_change`` and becomes what ``/health`` reports under ``config``.

The first check after start reads the file once even if it looks unchanged, so a file
rewritten between the service's own start-up load and the watcher's start is not missed.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from services.core.health import Health
from services.core.logging import get_logger

T = TypeVar("T")
log = get_logger("reload")


def digest(data: bytes) -> str:
    """A file version as shown in ``/health``: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:12]


def file_version(path: str | Path) -> str:
    """The version of the file at ``path`` (its content digest), or ``"missing"``."""
    try:
        return digest(Path(path).read_bytes())
    except OSError:
        return "missing"


@dataclass
class _Loaded(Generic[T]):
    value: T
    version: str


class WatchedFile(Generic[T]):
    """One configuration file, reloaded when its content changes (see the module text)."""

    def __init__(self, name: str, path: str | Path, loader: Callable[[Path], T],
                 on_change: Callable[[T], None], health: Health,
                 version: str | None = None) -> None:
        self.name = name
        self.path = Path(path)
        self.loader = loader
        self.on_change = on_change
        self.health = health
        self.version = version if version is not None else file_version(self.path)
        self.loaded_at = time.time()
        self.refused: str | None = None  # the version last refused, while it is on disk
        # None: the first check reads the file (see the module text).
        self._seen: tuple[int, int, int, int] | None = None
        for counter in (f"{name}_reloads", f"{name}_reloads_refused"):
            health.counters.inc(counter, 0)
        health.config(name, self.describe)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": str(self.path), "version": self.version,
                               "loaded_at": round(self.loaded_at, 3)}
        if self.refused:
            out["refused"] = self.refused
        return out

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()  # follows symlinks: a ConfigMap's ..data swap is seen
        except OSError:
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size

    def _load_if_changed(self) -> _Loaded[T] | None:
        """The new version if the file changed and is valid; None otherwise (problems are
        recorded here)."""
        seen = self._stat()
        if seen is None or seen == self._seen:
            return None
        self._seen = seen
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        version = digest(data)
        if version == self.version:
            if self.refused is not None:  # the refused file was put back to the one in use
                log.info(f"{self.name}.refused_file_replaced", path=str(self.path),
                         version=version, refused=self.refused)
                self.refused = None
                self.health.ok(self.name)
            return None
        if version == self.refused:
            return None
        try:
            value = self.loader(self.path)
        except Exception as exc:  # noqa: BLE001 — a bad file must never stop the service
            self._refuse(version, exc)
            return None
        if file_version(self.path) != version:
            # Rewritten while it was being loaded: look again at the next check.
            self._seen = None
        return _Loaded(value, version)

    def _refuse(self, version: str, exc: BaseException) -> None:
        self.refused = version
        self.health.counters.inc(f"{self.name}_reloads_refused")
        self.health.warning(self.name, f"reload of {self.path.name} (version {version}) "
                            f"refused, keeping version {self.version}: {exc}"[:500])
        log.error(f"{self.name}.reload_refused", path=str(self.path), version=version,
                  keeping=self.version, error=str(exc)[:1000])

    def _apply(self, loaded: _Loaded[T]) -> bool:
        previous = self.version
        try:
            self.on_change(loaded.value)
        except Exception as exc:  # noqa: BLE001 — the service keeps the version it has
            self._refuse(loaded.version, exc)
            return False
        self.version, self.loaded_at, self.refused = loaded.version, time.time(), None
        self.health.ok(self.name)
        self.health.counters.inc(f"{self.name}_reloads")
        log.info(f"{self.name}.reloaded", path=str(self.path), version=self.version,
                 previous=previous)
        return True

    def check(self) -> bool:
        """Reload if the file changed; True when a new version is now in use."""
        loaded = self._load_if_changed()
        return loaded is not None and self._apply(loaded)

    async def check_async(self) -> bool:
        """:meth:`check` with the reading and validation in a thread; ``on_change`` runs on
        the event loop."""
        loaded = await asyncio.to_thread(self._load_if_changed)
        return loaded is not None and self._apply(loaded)

    async def watch(self, interval_s: float) -> None:
        """Check every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.check_async()
            except Exception as exc:
                log.exception(f"{self.name}.check_failed", path=str(self.path), error=repr(exc))
