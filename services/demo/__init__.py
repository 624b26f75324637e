"""The demo behind `make run` / `lifeline run`: the local stack, every service, a steady
simulator and a console that shows alarms and pages as they happen."""
