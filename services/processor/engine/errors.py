"""Errors of the alarm engine."""

from services.core.errors import LifelineError


class EngineError(LifelineError):
    """Base of the alarm engine's errors."""
