#!/bin/bash
# InfluxDB 2.x in docker-compose: refuses a placeholder admin password or admin token before
# the image's own entrypoint sets InfluxDB up with them.
set -euo pipefail
who=influxdb
# shellcheck source=../check-secret.sh
. "${LIFELINE_CHECK_SECRET:-/etc/lifeline/check-secret.sh}"
check_secret INFLUX_ADMIN_PASSWORD "${DOCKER_INFLUXDB_INIT_PASSWORD:-}"
check_secret INFLUX_TOKEN "${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN:-}"
exec "${INFLUXDB_ENTRYPOINT:-/entrypoint.sh}" "$@"
