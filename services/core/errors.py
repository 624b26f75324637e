"""The one base exception of Lifeline's services: every package's own errors derive from
it, so a caller can tell Lifeline's refusals from library failures (which are wrapped with
``raise … from exc``)."""


class LifelineError(Exception):
    """Base of every error Lifeline's services raise on purpose."""
