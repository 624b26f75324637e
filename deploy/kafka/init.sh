#!/bin/bash
# kafka-init: Lifeline's topics, one SCRAM-SHA-512 principal per service and the ACLs that
# give each service only what its code does (least privilege; deny when nothing matches):
#
#   principal            writes                                    reads                                   groups
#   lifeline-ingest      readings, readings.dlq, health            -                                       -
#   lifeline-processor   alarms, ticks, context, readings.dlq,     readings, ticks, context                lifeline-processor,
#                        health, lifeline-processor-* (changelog)  lifeline-processor-*                    lifeline-processor-districts
#   lifeline-writer      readings.dlq, health, lifeline-writer-*   readings, alarms, health, oncall,       lifeline-writer,
#                                                                  lifeline-writer-*                       lifeline-writer-readings
#   lifeline-notifier    acks, oncall, oncall.ticks, health,       alarms, acks, oncall, oncall.ticks,     lifeline-notifier
#                        readings.dlq,                             lifeline-notifier-*
#                        lifeline-notifier-* (changelog)
#   lifeline-orders      orders, readings.dlq                      alarms, orders                          lifeline-orders-open,
#                                                                                                          lifeline-orders-store
#
# (topic names without the "lifeline." prefix). lifeline-<service>-* is the prefix of the
# topics Faust makes for an app: table changelogs and the assignor's leader topic; only there
# may a service create topics. The processor, the writer and the notifier also dead-letter
# what they refuse or cannot read, internal records included (lifeline.readings.dlq).
# Idempotent: run again after adding a service or rotating a password. Uses the admin
# principal through the SASL_SSL listener.
set -euo pipefail
umask 077
kafka_bin=${KAFKA_BIN:-/opt/kafka/bin}
bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
certs=${KAFKA_CERTS_DIR:-/etc/lifeline/kafka/certs}
admin=${KAFKA_ADMIN_USER:-lifeline-admin}
partitions=${KAFKA_PARTITIONS:-12}
replication=${KAFKA_REPLICATION:-1}
# Three brokers (deploy/compose/kafka-3-brokers.yml): replication 3, min.insync.replicas 2,
# so an acknowledged record (acks=all) is on two brokers and one broker may be down.
min_isr=${KAFKA_MIN_INSYNC_REPLICAS:-1}

who=kafka-init
# shellcheck source=../check-secret.sh
. "${LIFELINE_CHECK_SECRET:-/etc/lifeline/check-secret.sh}"
check_jaas_safe KAFKA_ADMIN_PASSWORD "${KAFKA_ADMIN_PASSWORD:-}"
for svc in INGEST PROCESSOR WRITER NOTIFIER ORDERS; do
  var="KAFKA_${svc}_PASSWORD"
  check_jaas_safe "$var" "${!var:-}"
done

cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
cat > "$cfg" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${admin}" password="${KAFKA_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=${certs}/ca.crt
PROPS
admin_args=(--bootstrap-server "$bootstrap" --command-config "$cfg")

# Topics (Faust's own topics lifeline-<service>-* are made by the apps themselves).
for t in lifeline.readings lifeline.readings.dlq lifeline.alarms lifeline.acks lifeline.ticks \
         lifeline.health lifeline.oncall lifeline.oncall.ticks lifeline.context lifeline.orders; do
  "$kafka_bin/kafka-topics.sh" "${admin_args[@]}" --create --if-not-exists --topic "$t" \
    --partitions "$partitions" --replication-factor "$replication" \
    --config "min.insync.replicas=$min_isr"
done

# One SCRAM principal per service (kafka-configs upserts: a changed password is rotated).
for svc in ingest processor writer notifier orders; do
  var="KAFKA_${svc^^}_PASSWORD"
  "$kafka_bin/kafka-configs.sh" "${admin_args[@]}" --alter --entity-type users \
    --entity-name "lifeline-$svc" --add-config "SCRAM-SHA-512=[iterations=8192,password=${!var}]"
done

acl() {  # principal operation resource-type name [pattern-type]
  "$kafka_bin/kafka-acls.sh" "${admin_args[@]}" --add --allow-principal "User:$1" \
    --operation "$2" "--$3" "$4" --resource-pattern-type "${5:-literal}"
}
write() { local p=$1; shift; for t in "$@"; do acl "$p" Write topic "$t"; done; }
read_() { local p=$1; shift; for t in "$@"; do acl "$p" Read topic "$t"; done; }
group() { acl "$1" Read group "$2"; }
own_prefix() {  # Faust's changelogs and leader topic of app lifeline-<service>
  for op in Create Read Write Describe; do acl "$1" "$op" topic "$1-" prefixed; done
}

write lifeline-ingest lifeline.readings lifeline.readings.dlq lifeline.health

write lifeline-processor lifeline.alarms lifeline.ticks lifeline.context lifeline.readings.dlq \
  lifeline.health
read_ lifeline-processor lifeline.readings lifeline.ticks lifeline.context
group lifeline-processor lifeline-processor
group lifeline-processor lifeline-processor-districts  # the district desk (decision 0023)
own_prefix lifeline-processor

write lifeline-writer lifeline.readings.dlq lifeline.health
read_ lifeline-writer lifeline.readings lifeline.alarms lifeline.health lifeline.oncall
group lifeline-writer lifeline-writer
group lifeline-writer lifeline-writer-readings
own_prefix lifeline-writer

write lifeline-notifier lifeline.acks lifeline.oncall lifeline.oncall.ticks lifeline.health \
  lifeline.readings.dlq
read_ lifeline-notifier lifeline.alarms lifeline.acks lifeline.oncall lifeline.oncall.ticks
group lifeline-notifier lifeline-notifier
own_prefix lifeline-notifier

# The orders service opens orders from alarms and projects lifeline.orders into PostgreSQL;
# `lifeline orders dispatch|report|…` produce to lifeline.orders with the same principal.
write lifeline-orders lifeline.orders lifeline.readings.dlq
read_ lifeline-orders lifeline.alarms lifeline.orders
group lifeline-orders lifeline-orders-open
group lifeline-orders lifeline-orders-store
echo "kafka-init: topics, principals and ACLs are in place"
