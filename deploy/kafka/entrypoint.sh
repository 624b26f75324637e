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
for f in ca.crt kafka.p12 kafka.p12.pass; do
  [ -s "$certs/$f" ] || refuse "$certs/$f is missing: run deploy/make-certs.sh (deploy/README.md)"
done
store_pass=$(cat "$certs/kafka.p12.pass")

mkdir -p "$conf_dir"
conf="$conf_dir/server.properties"
cat > "$conf" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
controller.listener.names=CONTROLLER
listeners=CLIENT://:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=CLIENT://${advertised}:9092
listener.security.protocol.map=CLIENT:SASL_SSL,CONTROLLER:PLAINTEXT
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
super.users=User:${admin};User:ANONYMOUS
auto.create.topics.enable=false
log.dirs=${data}
num.partitions=${KAFKA_PARTITIONS:-12}
default.replication.factor=${KAFKA_REPLICATION:-1}
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
log.retention.hours=${KAFKA_RETENTION_HOURS:-168}
PROPS

# The admin client configuration kafka-init and the health check use (inside this container).
cat > "$conf_dir/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="${admin}" password="${KAFKA_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=${certs}/ca.crt
PROPS

if [ ! -f "$data/meta.properties" ]; then
  cluster_id=$("$kafka_bin/kafka-storage.sh" random-uuid)
  "$kafka_bin/kafka-storage.sh" format --config "$conf" --cluster-id "$cluster_id" \
    --add-scram "SCRAM-SHA-512=[name=${admin},password=${KAFKA_ADMIN_PASSWORD}]"
fi
exec "$kafka_bin/kafka-server-start.sh" "$conf"
