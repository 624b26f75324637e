"""Grafana dashboards generated from the registry (thresholds and facilities stay in sync)."""
