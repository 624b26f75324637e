"""The wall around Faust: the only package that touches Faust's private attributes.

Services build their app with :func:`make_app`, add Lifeline's pages and gauges, and run it
with :func:`run_worker`; the fetch fix (decision 0013), the Tansu fetch wait and the
watchdogs are installed from here. A Faust upgrade is checked against this package alone.
"""

from services.core.faust.app import (
    add_health_pages,
    consumer_lag,
    make_app,
    partition_ticks,
    producer_backlog,
    register_gauges,
    report_health,
)
from services.core.faust.watch import RecoveryWatch, StallWatch, check_stream
from services.core.faust.worker import run_worker

__all__ = [
    "RecoveryWatch",
    "StallWatch",
    "add_health_pages",
    "check_stream",
    "consumer_lag",
    "make_app",
    "partition_ticks",
    "producer_backlog",
    "register_gauges",
    "report_health",
    "run_worker",
]
