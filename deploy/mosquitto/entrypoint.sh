#!/bin/sh
# Writes the broker's password file and final configuration, then runs Mosquitto.
# - Accounts: with deploy/mosquitto/accounts/ (made by `lifeline mqtt accounts --out
#   deploy/mosquitto/accounts`: one account per gateway, ACL from the registry) those are
#   used; without it, only ingest and the simulator get accounts (from .env).
# - TLS: with deploy/mosquitto/certs/{ca.crt,server.crt,server.key} a TLS listener on 8883
#   is added (gateways should use it; plain 1883 stays for ingest inside the network).
set -eu
umask 077
conf=/mosquitto/data/mosquitto.conf
cp /mosquitto/config/mosquitto.conf "$conf"
if [ -f /mosquitto/config/accounts/passwd ]; then
  cp /mosquitto/config/accounts/passwd /mosquitto/data/passwd
  echo "acl_file /mosquitto/config/accounts/acl" >> "$conf"
else
  mosquitto_passwd -c -b /mosquitto/data/passwd lifeline-ingest "$MQTT_INGEST_PASSWORD"
  mosquitto_passwd -b /mosquitto/data/passwd lifeline-simulator "$MQTT_SIMULATOR_PASSWORD"
  echo "acl_file /mosquitto/config/acl" >> "$conf"
fi
certs=/mosquitto/config/certs
if [ -f "$certs/ca.crt" ] && [ -f "$certs/server.crt" ] && [ -f "$certs/server.key" ]; then
  printf 'listener 8883\ncafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\ntls_version tlsv1.2\n' \
    "$certs" "$certs" "$certs" >> "$conf"
fi
chown mosquitto:mosquitto /mosquitto/data/passwd "$conf" 2>/dev/null || true
exec mosquitto -c "$conf"
