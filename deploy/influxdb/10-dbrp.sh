#!/bin/bash
# The image's first-start hook (docker-entrypoint-initdb.d): Lifeline's layout right away.
# The same idempotent deploy/influxdb/setup.sh runs again on every `docker compose up`
# (deploy/influxdb/tokens.sh), so upgrades reach volumes made by older releases.
set -euo pipefail
bash "${LIFELINE_INFLUX_SETUP:-/etc/lifeline/influxdb/setup.sh}"
