"""The worker process: Lifeline's Faust worker with a bounded shutdown and a one-line
refusal when the broker cannot be reached."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faust

from services.core.logging import configure, get_logger, logging_config


def run_worker(app: faust.App, *, loglevel: str = "INFO", service: str) -> None:
    """Run a Faust worker in this process until SIGTERM/SIGINT (blocks)."""
    import mode.loop

    from services.core.logging import parse_level

    mode.loop.use("uvloop")
    configure(loglevel, service=service)
    worker = _DeadlineWorker(
        app,
        loglevel=parse_level(loglevel)[0],
        logging_config=logging_config(loglevel),
        redirect_stdouts=False,
        workdir=Path.cwd(),
    )
    # Faust's terminal spinner sets the root logger to DEBUG (every send then builds a log
    # record: measured at ~3 % of a busy worker); services have no terminal to spin on.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit:
        if worker.unreachable:
            raise SystemExit(1) from None
        raise


SHUTDOWN_DEADLINE_S = 10.0


def _exit_after(deadline_s: float, service: str) -> None:
    """Backstop for a shutdown that waits on something gone (a broker stopped first: Faust's
    ``stop_and_shutdown`` then retries for minutes): end the process. At-least-once makes
    that safe — everything not committed is redelivered."""
    import os
    import threading

    def watch() -> None:
        time.sleep(deadline_s)
        get_logger("lifeline.faust").warning("worker.shutdown_deadline", service=service,
                                             seconds=deadline_s)
        logging.shutdown()
        os._exit(0)

    threading.Thread(target=watch, name="shutdown-deadline", daemon=True).start()


class _DeadlineWorker(faust.Worker):
    """A Faust worker whose SIGTERM/SIGINT shutdown ends within ``SHUTDOWN_DEADLINE_S``,
    and whose start against a broker it cannot reach is one log line and exit 1 (no
    traceback; ``LIFELINE_DEBUG=1`` keeps Faust's)."""

    unreachable = False

    async def start(self) -> None:
        import asyncio
        import os

        from aiokafka.errors import KafkaConnectionError

        try:
            await super().start()
        except KafkaConnectionError as exc:
            if os.environ.get("LIFELINE_DEBUG"):
                raise
            self.unreachable = True
            get_logger("lifeline.faust").error(
                "worker.kafka_unreachable", app=self.app.conf.id,
                bootstrap=",".join(f"{u.host}:{u.port}" for u in self.app.conf.broker),
                error=repr(exc)[:300])
            # What mode's worker treats as a stop, not an error: it shuts down quietly.
            raise asyncio.CancelledError from None

    def _arm(self) -> None:
        if not getattr(self, "_lifeline_deadline", False):
            self._lifeline_deadline = True
            _exit_after(SHUTDOWN_DEADLINE_S, self.app.conf.id)

    def _on_sigterm(self) -> None:
        self._arm()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm()
        super()._on_sigint()


