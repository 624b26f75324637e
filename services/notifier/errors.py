"""The notifier's exceptions (docs/decisions/0016-one-shape.md): every one derives from
:class:`~services.core.errors.LifelineError` through :class:`NotifierError`; where callers
catch a builtin (``ValueError``), it stays a second base. The modules that raise them
(channels, links, otp, escalation) import them from here."""

from __future__ import annotations

from services.core.errors import LifelineError


class NotifierError(LifelineError):
    """Base of the notifier's own errors."""


class ChannelError(NotifierError):
    """A delivery failed; ``retryable`` says whether trying again may help
    (services.notifier.channels)."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


class LinkError(NotifierError, ValueError):
    """An acknowledgement link that does not verify or has expired; ``status`` is the HTTP
    status the page answers with (services.notifier.links)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class CodeRefused(NotifierError):
    """No one-time code is sent: ``status`` is the HTTP status the page answers with
    (services.notifier.otp)."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class OnCallStateError(NotifierError, ValueError):
    """A saved facility state this notifier cannot read: a newer format, or damaged
    (services.notifier.escalation)."""
