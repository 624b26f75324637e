"""Ingest's exceptions (docs/decisions/0016-one-shape.md): every one derives from
:class:`~services.core.errors.LifelineError` through :class:`IngestError`.

Ingest refuses bad input by dead-lettering it, never by raising (services/ingest/
validate.py): what is left here are mistakes in wiring ingest itself."""

from __future__ import annotations

from services.core.errors import LifelineError


class IngestError(LifelineError):
    """Base of ingest's own errors."""


class NotStarted(IngestError, RuntimeError):
    """A message or a send reached ingest before :meth:`~services.ingest.app.Ingest.attach`
    gave it its event loop, Kafka producer and MQTT client."""
