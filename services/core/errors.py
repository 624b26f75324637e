"""The one base exception of Lifeline's services (defined in :mod:`schemas.errors`, where
the contracts' errors need it too): every package's own errors derive from it."""

from schemas.errors import LifelineError

__all__ = ["LifelineError"]
