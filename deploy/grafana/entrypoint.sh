#!/bin/sh
# Grafana in docker-compose: refuses a placeholder admin password, then runs Grafana with its
# own read-only InfluxDB token (made by the influxdb-tokens service) in INFLUX_TOKEN, which
# grafana/provisioning/datasources/lifeline.yaml puts in the datasource's header.
set -eu
who=grafana
# shellcheck source=../check-secret.sh
. "${LIFELINE_CHECK_SECRET:-/etc/lifeline/check-secret.sh}"
check_secret GRAFANA_ADMIN_PASSWORD "${GF_SECURITY_ADMIN_PASSWORD:-}"
check_secret POSTGRES_READER_PASSWORD "${POSTGRES_GRAFANA_PASSWORD:-}"
token_file=${INFLUX_TOKEN_FILE:-/run/lifeline/influx/token}
[ -s "$token_file" ] || refuse "$token_file is missing (made by the influxdb-tokens service)"
INFLUX_TOKEN=$(cat "$token_file")
export INFLUX_TOKEN
exec "${GRAFANA_RUN:-/run.sh}" "$@"
