#!/bin/sh
# Writes the broker's password file, ACL and final configuration, then runs Mosquitto.
# - Accounts: with deploy/mosquitto/accounts/ (made by `lifeline mqtt accounts --out
#   deploy/mosquitto/accounts`: one account per gateway, ACL from the registry) those are
#   used; without it, only ingest's account (from .env).
# - The simulator's account (it may publish for every facility) is made only for a test
#   deployment that sets MQTT_ENABLE_SIMULATOR=true (with MQTT_SIMULATOR_PASSWORD).
# - TLS: deploy/mosquitto/certs/{ca.crt,server.crt,server.key} (deploy/make-certs.sh) give the
#   listener on 8883, for gateways and ingest alike. Without them Mosquitto does not start,
#   unless a test deployment sets MQTT_PLAIN_LISTENER=true (plain MQTT on 1883).
set -eu
umask 077
conf=/mosquitto/data/mosquitto.conf
who=mosquitto
# shellcheck source=../check-secret.sh
. "${LIFELINE_CHECK_SECRET:-/etc/lifeline/check-secret.sh}"
enabled() { case "${1:-}" in true|1|yes) return 0;; *) return 1;; esac; }

cp /mosquitto/config/mosquitto.conf "$conf"
if [ -f /mosquitto/config/accounts/passwd ]; then
  cp /mosquitto/config/accounts/passwd /mosquitto/data/passwd
  echo "acl_file /mosquitto/config/accounts/acl" >> "$conf"
else
  check_secret MQTT_INGEST_PASSWORD "${MQTT_INGEST_PASSWORD:-}"
  mosquitto_passwd -c -b /mosquitto/data/passwd lifeline-ingest "$MQTT_INGEST_PASSWORD"
  cp /mosquitto/config/acl /mosquitto/data/acl
  if enabled "${MQTT_ENABLE_SIMULATOR:-false}"; then
    check_secret MQTT_SIMULATOR_PASSWORD "${MQTT_SIMULATOR_PASSWORD:-}"
    mosquitto_passwd -b /mosquitto/data/passwd lifeline-simulator "$MQTT_SIMULATOR_PASSWORD"
    printf '\n# test deployment (MQTT_ENABLE_SIMULATOR=true)\nuser lifeline-simulator\ntopic write lifeline/+/+/telemetry\n' \
      >> /mosquitto/data/acl
  fi
  echo "acl_file /mosquitto/data/acl" >> "$conf"
fi
certs=/mosquitto/config/certs
listeners=0
if [ -f "$certs/ca.crt" ] && [ -f "$certs/server.crt" ] && [ -f "$certs/server.key" ]; then
  printf 'listener 8883\ncafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\ntls_version tlsv1.2\n' \
    "$certs" "$certs" "$certs" >> "$conf"
  listeners=1
fi
if enabled "${MQTT_PLAIN_LISTENER:-false}"; then
  printf 'listener 1883\n' >> "$conf"
  listeners=1
fi
[ "$listeners" = 1 ] || refuse "no TLS certificates in $certs (run deploy/make-certs.sh)" \
  "and MQTT_PLAIN_LISTENER is not enabled"
chown mosquitto:mosquitto /mosquitto/data/passwd "$conf" 2>/dev/null || true
[ ! -f /mosquitto/data/acl ] || chown mosquitto:mosquitto /mosquitto/data/acl 2>/dev/null || true
exec mosquitto -c "$conf"
