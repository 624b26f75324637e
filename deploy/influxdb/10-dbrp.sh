#!/bin/bash
# Runs once at InfluxDB 2.x initial setup (docker-entrypoint-initdb.d). Makes 2.x look like
# the layout Lifeline sets up itself on 1.x (docs/decisions/0007-storage-layout.md):
# - bucket "$DOCKER_INFLUXDB_INIT_BUCKET" (raw readings, retention INFLUX_RETENTION) and
#   bucket "${DOCKER_INFLUXDB_INIT_BUCKET}_long" (alarms, on-call trail, 1-minute aggregates;
#   kept forever) — the writer's LIFELINE_INFLUX_BUCKET / LIFELINE_INFLUX_LONG_BUCKET;
# - DBRP mappings so InfluxQL (Grafana, Lifeline's reads) finds them as database
#   "lifeline", retention policies "raw" (default) and "long";
# - the task "lifeline-reading-1m": mean/min/max per series and minute into
#   long.reading_1m, re-computing the last 5 minutes every minute (the 1.x continuous query).
set -euo pipefail
org="$DOCKER_INFLUXDB_INIT_ORG"
raw="$DOCKER_INFLUXDB_INIT_BUCKET"
long="${raw}_long"

influx bucket create --org "$org" --name "$long" --retention 0
raw_id=$(influx bucket list --org "$org" --name "$raw" --hide-headers | cut -f 1)
long_id=$(influx bucket list --org "$org" --name "$long" --hide-headers | cut -f 1)
influx v1 dbrp create --org "$org" --bucket-id "$raw_id" --db lifeline --rp raw --default
influx v1 dbrp create --org "$org" --bucket-id "$long_id" --db lifeline --rp long

task=$(mktemp)
cat > "$task" <<FLUX
option task = {name: "lifeline-reading-1m", every: 1m, offset: 10s}

data = from(bucket: "${raw}")
    |> range(start: -5m)
    |> filter(fn: (r) => r._measurement == "reading" and r._field == "value")

agg = (fn, name) => data
    |> aggregateWindow(every: 1m, fn: fn, createEmpty: false, timeSrc: "_start")
    |> set(key: "_field", value: name)

union(tables: [agg(fn: mean, name: "mean"), agg(fn: min, name: "min"), agg(fn: max, name: "max")])
    |> set(key: "_measurement", value: "reading_1m")
    |> to(bucket: "${long}", org: "${org}")
FLUX
influx task create --org "$org" --file "$task"

# The hourly rollups month-long panels read (the 1.x continuous queries reading_1h and
# district_1h): from the 1-minute aggregates, every 10 minutes over the last 2 hours.
hourly() {  # name, group columns (Flux array)
  cat > "$task" <<FLUX
option task = {name: "lifeline-$1", every: 10m, offset: 1m}

data = from(bucket: "${long}")
    |> range(start: -2h)
    |> filter(fn: (r) => r._measurement == "reading_1m")
    |> group(columns: $2)

agg = (field, fn) => data
    |> filter(fn: (r) => r._field == field)
    |> aggregateWindow(every: 1h, fn: fn, createEmpty: false, timeSrc: "_start")

union(tables: [agg(field: "mean", fn: mean), agg(field: "min", fn: min), agg(field: "max", fn: max)])
    |> set(key: "_measurement", value: "$1")
    |> to(bucket: "${long}", org: "${org}")
FLUX
  influx task create --org "$org" --file "$task"
}
hourly reading_1h '["_measurement", "_field", "facility", "sensor", "kind", "metric", "district"]'
hourly district_1h '["_measurement", "_field", "district", "kind", "metric"]'
rm -f "$task"
