"""Kafka client settings shared by aiokafka producers and Faust apps.

``flavor=tansu`` applies the local broker's measured workarounds (LOCAL_STACK.md); with
``flavor=kafka`` none of them is active, so production Kafka runs the same code with its
own defaults.
"""

from __future__ import annotations

from typing import Any

from services.core.settings import KafkaSettings


def security_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka security options (also accepted by Faust as broker credentials)."""
    out: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        out["sasl_mechanism"] = kafka.sasl_mechanism
        out["sasl_plain_username"] = kafka.sasl_username
        out["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return out


def producer_kwargs(kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    """Options for an ``AIOKafkaProducer`` that acknowledges only durable writes."""
    kw: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "client_id": client_id,
        "acks": "all",
        # Few, large batches: on Tansu each produced batch is stored as one object and
        # every fetch scans all of a partition's objects (measured: a 16k readings/s
        # pipeline with 2 ms batches made Tansu need 1.5 cores after ~3 minutes).
        "linger_ms": kafka.producer_linger_ms,
        "max_batch_size": 256 << 10,
        "request_timeout_ms": 15000,
        "retry_backoff_ms": 200,
        **security_kwargs(kafka),
    }
    if kafka.flavor == "kafka":
        # Tansu refuses InitProducerId v0, which aiokafka sends; real Kafka gets idempotence.
        kw["enable_idempotence"] = True
    return kw


def faust_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Faust app settings for this broker flavour."""
    kw: dict[str, Any] = {
        "broker": f"kafka://{kafka.bootstrap}",
        "processing_guarantee": "at_least_once",
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication,
        "broker_credentials": None,
    }
    if kafka.flavor == "tansu":
        kw.update(
            # Tansu holds JoinGroup for half the session timeout: 6 s joins in ~3 s.
            broker_session_timeout=6.0,
            broker_heartbeat_interval=1.5,
            # Tansu's ListOffsets(latest) counts batches, not records: with one record per
            # batch table recovery is exact (else tables silently lose updates).
            producer_max_batch_size=1,
        )
    return kw
