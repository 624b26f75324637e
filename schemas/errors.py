"""The one base of the exceptions Lifeline raises on purpose.

It lives in ``schemas/`` because the contracts' own errors (registry, on-call file, units,
scenarios) derive from it and ``schemas/`` imports nothing of ``services/``;
``services.core.errors`` re-exports it. A caller can tell Lifeline's refusals from library
failures (which are wrapped with ``raise … from exc``). Errors that callers also catch by a
builtin type keep it as a second base (``class RegistryError(LifelineError, ValueError)``).
The one exception is ``services.core.settings.SettingsError``: a ``SystemExit`` on purpose,
so that a refused configuration ends the process with its message and no traceback.
"""


class LifelineError(Exception):
    """Base of every error Lifeline raises on purpose."""
