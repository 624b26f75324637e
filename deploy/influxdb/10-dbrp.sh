#!/bin/bash
# Runs once at InfluxDB 2.x initial setup: map database "lifeline" (InfluxQL, which Grafana
# and Lifeline's dashboards use) to the bucket.
set -euo pipefail
bucket_id=$(influx bucket list --org "$DOCKER_INFLUXDB_INIT_ORG" \
  --name "$DOCKER_INFLUXDB_INIT_BUCKET" --hide-headers | cut -f 1)
influx v1 dbrp create --org "$DOCKER_INFLUXDB_INIT_ORG" --bucket-id "$bucket_id" \
  --db lifeline --rp autogen --default
