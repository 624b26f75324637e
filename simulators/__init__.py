"""Facility simulators that publish telemetry over MQTT with Lifeline's contract.

Simulators import ``schemas`` only; they are field gateways as far as Lifeline knows.
"""
