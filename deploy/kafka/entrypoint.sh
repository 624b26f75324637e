#!/bin/bash
# Apache Kafka (KRaft, one combined broker+controller) with authentication and ACLs:
# - clients: one listener, SASL_SSL with SCRAM-SHA-512 on :9092 (no PLAINTEXT listener);
# - controller: PLAINTEXT bound to 127.0.0.1:9093 inside this container only (not published,
#   unreachable from any other container); KRaft's controller listener cannot use SCRAM;
# - StandardAuthorizer, deny when no ACL matches; super users: the admin principal (kafka-init,
#   inter-broker traffic) and ANONYMOUS, which only the loopback controller listener yields;
# - the admin's SCRAM credential is written when the storage is formatted (first start);
#   kafka-init (deploy/kafka/init.sh) adds the services' principals and ACLs.
# Certificates: deploy/kafka/certs/{ca.crt,kafka.p12,kafka.p12.pass} from deploy/make-certs.sh.
#
# Three brokers (deploy/compose/kafka-3-brokers.yml, decision 0011: replication 3): set
# KAFKA_NODE_ID, KAFKA_CONTROLLER_QUORUM_VOTERS (id@host:9093,...) and KAFKA_CLUSTER_ID (the
# same on every node). The controllers must then reach each other, so the controller
# listener is SASL_SSL on :9093 with SASL/PLAIN (KRaft controllers cannot use SCRAM) for the
# one principal "controller" (KAFKA_CONTROLLER_PASSWORD), and ANONYMOUS is no super user.
# KAFKA_REPLICATION / KAFKA_MIN_INSYNC_REPLICAS set the defaults and the internal topics'.
set -euo pipefail
umask 077
certs=${KAFKA_CERTS_DIR:-/etc/lifeline/kafka/certs}
conf_dir=${KAFKA_CONF_DIR:-/opt/kafka/config/lifeline}
data=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
kafka_bin=${KAFKA_BIN:-/opt/kafka/bin}
advertised=${KAFKA_ADVERTISED_HOST:-kafka}
admin=${KAFKA_ADMIN_USER:-lifeline-admin}

who=kafka
# shellcheck source=../check-secret.sh
. "${LIFELINE_CHECK_SECRET:-/etc/lifeline/check-secret.sh}"
check_jaas_safe KAFKA_ADMIN_PASSWORD "${KAFKA_ADMIN_PASSWORD:-}"
node_id=${KAFKA_NODE_ID:-1}
voters=${KAFKA_CONTROLLER_QUORUM_VOTERS:-}
replication=${KAFKA_REPLICATION:-1}
min_isr=${KAFKA_MIN_INSYNC_REPLICAS:-1}
if [ -n "$voters" ]; then
  check_jaas_safe KAFKA_CONTROLLER_PASSWORD "${KAFKA_CONTROLLER_PASSWORD:-}"
  [ -n "${KAFKA_CLUSTER_ID:-}" ] || refuse "KAFKA_CLUSTER_ID is required with KAFKA_CONTROLLER_QUORUM_VOTERS (the same on every broker)"
  controller_listener="CONTROLLER://:9093"
  controller_protocol=SASL_SSL
  super_users="User:${admin};User:controller"
else
  voters="1@127.0.0.1:9093"
  controller_listener="CONTROLLER://127.0.0.1:9093"
  controller_protocol=PLAINTEXT
  super_users="User:${admin};User:ANONYMOUS"
fi
for f in ca.crt kafka.p12 kafka.p12.pass; do
  [ -s "$certs/$f" ] || refuse "$certs/$f is missing: run deploy/make-certs.sh (deploy/README.md)"
done
store_pass=$(cat "$certs/kafka.p12.pass")

mkdir -p "$conf_dir"
conf="$conf_dir/server.properties"
cat > "$conf" <<PROPS
process.roles=broker,controller
node.id=${node_id}
controller.quorum.voters=${voters}
controller.listener.names=CONTROLLER
listeners=CLIENT://:9092,${controller_listener}
advertised.listeners=CLIENT://${advertised}:9092
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:${controller_protocol}
inter.broker.listener.name=CLIENT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${admin}" password="${KAFKA_ADMIN_PASSWORD}";
ssl.keystore.type=PKCS12
ssl.keystore.location=${certs}/kafka.p12
ssl.keystore.password=${store_pass}
ssl.key.password=${store_pass}
ssl.truststore.type=PEM
ssl.truststore.location=${certs}/ca.crt
ssl.client.auth=none
ssl.enabled.protocols=TLSv1.3,TLSv1.2
ssl.endpoint.identification.algorithm=https
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=${super_users}
auto.create.topics.enable=false
log.dirs=${data}
num.partitions=${KAFKA_PARTITIONS:-12}
default.replication.factor=${replication}
min.insync.replicas=${min_isr}
offsets.topic.replication.factor=${replication}
transaction.state.log.replication.factor=${replication}
transaction.state.log.min.isr=${min_isr}
log.retention.hours=${KAFKA_RETENTION_HOURS:-168}
PROPS
if [ "$controller_protocol" = SASL_SSL ]; then
  cat >> "$conf" <<PROPS
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="controller" password="${KAFKA_CONTROLLER_PASSWORD}" user_controller="${KAFKA_CONTROLLER_PASSWORD}";
PROPS
fi

# The admin client configuration kafka-init and the health check use (inside this container).
cat > "$conf_dir/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${admin}" password="${KAFKA_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=${certs}/ca.crt
PROPS

if [ ! -f "$data/meta.properties" ]; then
  cluster_id=${KAFKA_CLUSTER_ID:-$("$kafka_bin/kafka-storage.sh" random-uuid)}
  "$kafka_bin/kafka-storage.sh" format --config "$conf" --cluster-id "$cluster_id" \
    --add-scram "SCRAM-SHA-512=[name=${admin},password=${KAFKA_ADMIN_PASSWORD}]"
fi
exec "$kafka_bin/kafka-server-start.sh" "$conf"
