#!/bin/bash
# The influxdb-tokens one-shot service (docker-compose.yml), after InfluxDB is up: one API
# token per client with only the permissions its code needs, each written to a volume only
# that client mounts (the admin token INFLUX_TOKEN stays with InfluxDB and this service):
#   writer    write "$INFLUX_BUCKET" and "${INFLUX_BUCKET}_long"; read "${INFLUX_BUCKET}_long"
#             (the diurnal baseline it restores at start-up from long.reading_1h)
#   notifier  read both (recent readings on the acknowledgement page, the on-call history)
#   orders    read the long bucket (the reports: alarm events, 1-minute rollups)
#   grafana   read both (the dashboards' InfluxQL)
# A client whose token file exists keeps it: delete the file (docker volume) to make a new
# one, and revoke the old one with `influx auth delete` (docs/operations.md, rotation).
# Runs on every `docker compose up`, first bringing the buckets, mappings and tasks up to
# date (deploy/influxdb/setup.sh, idempotent: the upgrade path of existing volumes).
# Reads INFLUX_HOST, INFLUX_TOKEN (admin) and INFLUX_ORG like the influx CLI itself.
set -euo pipefail
bash "${LIFELINE_INFLUX_SETUP:-$(dirname "$0")/setup.sh}"
org="${INFLUX_ORG:?}"
raw="${INFLUX_BUCKET:?}"
long="${raw}_long"
out=${LIFELINE_TOKEN_DIR:-/lifeline/tokens}

raw_id=$(influx bucket list --org "$org" --name "$raw" --hide-headers | cut -f 1)
long_id=$(influx bucket list --org "$org" --name "$long" --hide-headers | cut -f 1)
if [ -z "$raw_id" ] || [ -z "$long_id" ]; then
  echo "influxdb-tokens: buckets $raw and $long not found (deploy/influxdb/10-dbrp.sh)" >&2
  exit 1
fi

token() {  # client owner-uid, then the permission flags of `influx auth create`
  local client=$1 owner=$2 file="$out/$1/token" json tok
  shift 2
  if [ -s "$file" ]; then
    echo "influxdb-tokens: $client keeps its token"
    return
  fi
  json=$(influx auth create --org "$org" --description "lifeline-$client" --json "$@")
  # The token's key, on its own line or not (pretty-printed or compact JSON).
  tok=$(printf '%s\n' "$json" | grep -o '"token":[[:space:]]*"[^"]*"' | head -n 1 \
        | sed 's/.*"\([^"]*\)"$/\1/')
  if [ -z "$tok" ]; then
    echo "influxdb-tokens: no token in InfluxDB's answer for $client" >&2
    exit 1
  fi
  mkdir -p "$out/$client"
  (umask 077; printf '%s\n' "$tok" > "$file.tmp")
  chown "$owner:$owner" "$file.tmp"  # the client's own user (uid of its image)
  chmod 0400 "$file.tmp"
  mv "$file.tmp" "$file"
  echo "influxdb-tokens: made the $client token"
}

# Lifeline's image runs as uid 10001, Grafana's as 472.
token writer 10001 --write-bucket "$raw_id" --write-bucket "$long_id" --read-bucket "$long_id"
token notifier 10001 --read-bucket "$raw_id" --read-bucket "$long_id"
token grafana 472 --read-bucket "$raw_id" --read-bucket "$long_id"
token orders 10001 --read-bucket "$long_id"   # the reports: alarm events, 1-minute rollups
