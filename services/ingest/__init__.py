"""ingest: MQTT telemetry in, validated reports to Kafka, everything else to the DLQ."""
