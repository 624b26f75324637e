#!/bin/sh
# Writes the password file from the environment (.env), then runs Mosquitto.
set -eu
umask 077
mosquitto_passwd -c -b /mosquitto/data/passwd lifeline-ingest "$MQTT_INGEST_PASSWORD"
mosquitto_passwd -b /mosquitto/data/passwd lifeline-simulator "$MQTT_SIMULATOR_PASSWORD"
chown mosquitto:mosquitto /mosquitto/data/passwd
exec mosquitto -c /mosquitto/config/mosquitto.conf
