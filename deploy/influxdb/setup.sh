#!/bin/bash
# Lifeline's InfluxDB 2.x layout, made or brought up to date: idempotent, run on EVERY
# `docker compose up` (by the influxdb-tokens one-shot service, deploy/influxdb/tokens.sh,
# before the tokens) and on the volume's first start (10-dbrp.sh). Upgrading Lifeline is
# therefore `docker compose up -d`: what a new release changes here (a task's Flux, a new
# mapping, the raw retention) reaches volumes made by an older one (docs/operations.md).
# Makes 2.x look like the layout Lifeline sets up itself on 1.x
# (docs/decisions/0007-storage-layout.md):
# - bucket "$bucket" (raw readings, retention INFLUX_RETENTION, re-applied every run) and
#   bucket "${bucket}_long" (alarms, on-call trail, 1-minute aggregates; kept forever) —
#   the writer's LIFELINE_INFLUX_BUCKET / LIFELINE_INFLUX_LONG_BUCKET;
# - DBRP mappings so InfluxQL (Grafana, Lifeline's reads) finds them as database
#   "lifeline", retention policies "raw" (default) and "long";
# - the task "lifeline-reading-1m": mean/min/max per series and minute into
#   long.reading_1m, re-computing the last 5 minutes every minute (the 1.x continuous
#   query), and the hourly rollups "lifeline-reading_1h" / "lifeline-district_1h".
#   Existing tasks are updated to this Flux, never duplicated.
# Reads INFLUX_ORG / INFLUX_BUCKET / INFLUX_RETENTION (the tokens service) or the image's
# DOCKER_INFLUXDB_INIT_ORG / _BUCKET / _RETENTION (first start); INFLUX_HOST and
# INFLUX_TOKEN (admin) like the influx CLI itself.
set -euo pipefail
org="${INFLUX_ORG:-${DOCKER_INFLUXDB_INIT_ORG:?set INFLUX_ORG}}"
raw="${INFLUX_BUCKET:-${DOCKER_INFLUXDB_INIT_BUCKET:?set INFLUX_BUCKET}}"
retention="${INFLUX_RETENTION:-${DOCKER_INFLUXDB_INIT_RETENTION:-}}"
long="${raw}_long"

field() {  # column N of the tab-separated rows whose column M equals VALUE: N M VALUE
  awk -F'\t' -v n="$1" -v m="$2" -v v="$3" '$m == v { print $n; exit }'
}
bucket_id() { influx bucket list --org "$org" --hide-headers | field 1 2 "$1"; }

ensure_bucket() {  # name retention
  local id
  id=$(bucket_id "$1")
  if [ -z "$id" ]; then
    influx bucket create --org "$org" --name "$1" --retention "$2" >/dev/null
    echo "influxdb-setup: made bucket $1"
  elif [ -n "$2" ]; then
    influx bucket update --id "$id" --retention "$2" >/dev/null
  fi
}
ensure_bucket "$raw" "${retention:-30d}"
ensure_bucket "$long" 0
raw_id=$(bucket_id "$raw")
long_id=$(bucket_id "$long")

ensure_dbrp() {  # bucket-id rp [--default]
  local have
  have=$(influx v1 dbrp list --org "$org" --hide-headers \
         | awk -F'\t' -v rp="$2" '$2 == "lifeline" && $4 == rp { print $3; exit }')
  if [ -z "$have" ]; then
    influx v1 dbrp create --org "$org" --bucket-id "$1" --db lifeline --rp "$2" "${@:3}" >/dev/null
    echo "influxdb-setup: mapped lifeline/$2"
  elif [ "$have" != "$1" ]; then
    echo "influxdb-setup: lifeline/$2 is mapped to bucket $have, not $1: fix it by hand" >&2
    exit 1
  fi
}
ensure_dbrp "$raw_id" raw --default
ensure_dbrp "$long_id" long

task=$(mktemp)
trap 'rm -f "$task"' EXIT
ensure_task() {  # name (the Flux is in $task)
  local id
  id=$(influx task list --org "$org" --hide-headers | field 1 2 "$1")
  if [ -z "$id" ]; then
    influx task create --org "$org" --file "$task" >/dev/null
    echo "influxdb-setup: made task $1"
  else
    influx task update --id "$id" --file "$task" >/dev/null
  fi
}

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
ensure_task lifeline-reading-1m

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
  ensure_task "lifeline-$1"
}
hourly reading_1h '["_measurement", "_field", "facility", "sensor", "kind", "metric", "district"]'
hourly district_1h '["_measurement", "_field", "district", "kind", "metric"]'
echo "influxdb-setup: buckets, mappings and tasks are in place"
