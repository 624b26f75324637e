"""Kafka client settings shared by aiokafka producers and Faust apps.

``flavor=tansu`` applies the local broker's measured workarounds (LOCAL_STACK.md); with
``flavor=kafka`` none of them is active, so production Kafka runs the same code with its
own defaults.

Security is configuration only: :func:`security_kwargs` gives every aiokafka client
(ingest's producer, the writer's readings consumer, the context feed, the CLI tools) and
:func:`faust_credentials` gives the Faust apps the same protocol, SASL mechanism, principal
and TLS context — Faust passes its ``broker_credentials`` to each of its own consumers,
producers and admin client (``faust.transport.drivers.aiokafka.credentials_to_aiokafka_auth``),
so both paths end in the same aiokafka options.
"""

from __future__ import annotations

import ssl
from typing import Any

from services.core.settings import KafkaSettings


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context for ``SSL``/``SASL_SSL`` (``None`` otherwise): the broker's
    certificate verified against ``ca_file`` (or the system's CAs), host name included;
    TLS 1.2 at least; the client certificate when configured."""
    if not kafka.uses_tls:
        return None
    from aiokafka.helpers import create_ssl_context

    ctx: ssl.SSLContext = create_ssl_context(
        cafile=str(kafka.ca_file) if kafka.ca_file else None,
        certfile=str(kafka.cert_file) if kafka.cert_file else None,
        keyfile=str(kafka.key_file) if kafka.key_file else None,
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def security_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka security options (the Faust apps get the same through
    :func:`faust_credentials`)."""
    out: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    ctx = ssl_context(kafka)
    if ctx is not None:
        out["ssl_context"] = ctx
    if kafka.uses_sasl:
        out["sasl_mechanism"] = kafka.sasl_mechanism
        out["sasl_plain_username"] = kafka.sasl_username
        out["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return out


def faust_credentials(kafka: KafkaSettings) -> Any:
    """``broker_credentials`` for a Faust app: ``SASLCredentials`` (with the TLS context
    for SASL_SSL), ``SSLCredentials`` for SSL, ``None`` for PLAINTEXT."""
    if kafka.security_protocol == "PLAINTEXT":
        return None
    from faust.auth import SASLCredentials, SSLCredentials

    ctx = ssl_context(kafka)
    if not kafka.uses_sasl:
        return SSLCredentials(ctx)
    return SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        ssl_context=ctx,  # given: SASL_SSL; None: SASL_PLAINTEXT
        mechanism=kafka.sasl_mechanism,
    )


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
        # Tansu refuses InitProducerId v0, which aiokafka sends; real Kafka gets idempotence
        # (Kafka >= 3.0 allows it with WRITE on the topic: no cluster-wide ACL needed).
        kw["enable_idempotence"] = True
    return kw


def faust_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Faust app settings for this broker flavour."""
    kw: dict[str, Any] = {
        "broker": f"kafka://{kafka.bootstrap}",
        "processing_guarantee": "at_least_once",
        "topic_partitions": kafka.partitions,
        "topic_replication_factor": kafka.replication,
        "broker_credentials": faust_credentials(kafka),
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
