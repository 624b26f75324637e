"""processor: the Faust alarm engine (readings in, alarm lifecycle events out)."""
