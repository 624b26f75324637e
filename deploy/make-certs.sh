#!/usr/bin/env bash
# Makes the TLS material of docker-compose's brokers (kept out of git: deploy/.gitignore):
#   deploy/certs/ca.crt, ca.key             a private CA (reused when present; keep ca.key offline)
#   deploy/mosquitto/certs/ca.crt, server.crt, server.key    MQTT over TLS on 8883
#   deploy/kafka/certs/ca.crt, kafka.p12, kafka.p12.pass     Kafka's SASL_SSL listener
#   deploy/clients/ca.crt                   what gateways and Lifeline's services verify against
# Names in the certificates: MQTT_CERT_HOSTS (default "mosquitto,localhost"; add the name
# gateways use, e.g. MQTT_CERT_HOSTS=mosquitto,mqtt.lifeline.example.net) and KAFKA_CERT_HOSTS
# (default "kafka"). Run as the user who runs docker compose; certificates last DAYS (825).
# A certificate from the bureau's own CA works the same: put it in the same files instead.
set -euo pipefail
cd "$(dirname "$0")"
days=${DAYS:-825}
mqtt_hosts=${MQTT_CERT_HOSTS:-mosquitto,localhost}
kafka_hosts=${KAFKA_CERT_HOSTS:-kafka}
umask 077
mkdir -p certs mosquitto/certs kafka/certs clients

san() {  # comma-separated names -> subjectAltName value
  local out="" h
  IFS=',' read -ra names <<< "$1"
  for h in "${names[@]}"; do
    if [[ $h =~ ^[0-9.]+$ ]]; then out+="IP:$h,"; else out+="DNS:$h,"; fi
  done
  printf '%s' "${out%,}"
}

if [ ! -s certs/ca.key ]; then
  openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 3650 -subj "/CN=Lifeline private CA" \
    -keyout certs/ca.key -out certs/ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi

server_cert() {  # dir name hosts
  local dir=$1 name=$2 hosts=$3 ext
  ext=$(mktemp)
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$(san "$hosts")" > "$ext"
  openssl req -newkey rsa:2048 -sha256 -nodes -subj "/CN=${hosts%%,*}" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -sha256 -days "$days" -in "$dir/$name.csr" -CA certs/ca.crt -CAkey certs/ca.key \
    -CAcreateserial -CAserial certs/ca.srl -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
}

server_cert mosquitto/certs server "$mqtt_hosts"
cp certs/ca.crt mosquitto/certs/ca.crt

server_cert kafka/certs kafka "$kafka_hosts"
openssl rand -hex 24 > kafka/certs/kafka.p12.pass
openssl pkcs12 -export -name kafka -in kafka/certs/kafka.crt -inkey kafka/certs/kafka.key \
  -certfile certs/ca.crt -passout "file:kafka/certs/kafka.p12.pass" -out kafka/certs/kafka.p12
rm -f kafka/certs/kafka.key
cp certs/ca.crt kafka/certs/ca.crt
cp certs/ca.crt clients/ca.crt

# The brokers' images read these as their own users (Kafka: uid 1000; Mosquitto reads them
# as root before dropping privileges): public parts world-readable, private parts not.
chmod 0644 certs/ca.crt mosquitto/certs/ca.crt mosquitto/certs/server.crt kafka/certs/ca.crt \
  kafka/certs/kafka.crt clients/ca.crt
chmod 0600 certs/ca.key mosquitto/certs/server.key
chmod 0640 kafka/certs/kafka.p12 kafka/certs/kafka.p12.pass
if [ "$(id -u)" = 0 ]; then chgrp 1000 kafka/certs/kafka.p12 kafka/certs/kafka.p12.pass; fi
chmod 0755 clients mosquitto/certs kafka/certs
echo "make-certs: MQTT for ${mqtt_hosts}, Kafka for ${kafka_hosts}; CA: deploy/certs/ca.crt"
if [ "$(id -u)" != 0 ]; then
  echo "make-certs: Kafka runs as uid 1000: 'sudo chgrp 1000 deploy/kafka/certs/kafka.p12*'" \
       "unless you are uid 1000"
fi
