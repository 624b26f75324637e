"""The alarm engine: pure, deterministic evaluation of readings against the registry's rules.

``signals`` computes derived signals over event-time windows; ``tracker`` turns a rule's
instantaneous level into debounced, flap-protected alarm transitions; ``state`` holds one
facility's working state and its JSON form (the Faust table value); ``maintenance`` answers
whether a moment is inside a silence; ``engine`` puts them together per facility.
Nothing here knows about Kafka or Faust.
"""

from services.processor.engine.engine import AlarmEngine, Outcome
from services.processor.engine.state import FacilityState

__all__ = ["AlarmEngine", "FacilityState", "Outcome"]
