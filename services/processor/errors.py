"""The processor's exceptions.

The alarm engine's own errors stay in ``engine/`` (``engine/errors.py`` ``EngineError``,
``engine/state.py`` ``StateVersionError``): the engine is a pure package that knows nothing
of the service around it and must not import from it. They are re-exported here so the
service's errors are found in the same file as in every other service. Both derive from
:class:`services.core.errors.LifelineError`.
"""

from services.processor.engine.errors import EngineError as EngineError
from services.processor.engine.state import StateVersionError as StateVersionError

__all__ = ["EngineError", "StateVersionError"]
