"""The orders service's errors (all :class:`~schemas.errors.LifelineError`)."""

from __future__ import annotations

from schemas.errors import LifelineError


class OrderNotFound(LifelineError, LookupError):
    """No work order has that id."""


class StoreUnavailable(LifelineError, ConnectionError):
    """PostgreSQL cannot be reached or refused the statement."""


class NotApplied(LifelineError, TimeoutError):
    """An order event was sent but the store did not show it applied in time."""


class StoreRefused(LifelineError, ValueError):
    """PostgreSQL refused a statement for its data (not a lost connection): the record is
    set aside (dead-lettered), not retried."""
