"""kafka.client_options (librdkafka names, used as-is by every confluent-kafka client) for Faust.

Faust talks to Kafka through aiokafka, which takes credentials as objects, not librdkafka
properties; this maps the security ones so one `kafka.client_options` block configures every
component: security.protocol, sasl.mechanism(s), sasl.username/password, ssl.ca.location,
ssl.certificate.location, ssl.key.location, ssl.key.password, ssl.endpoint.identification.algorithm.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import faust


class KafkaAuthError(ValueError):
    """A kafka.client_options security setting Faust cannot use; the message names it."""


def ssl_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=options.get("ssl.ca.location") or None)
    if str(options.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        ctx.check_hostname = False
    if str(options.get("enable.ssl.certificate.verification", "true")).lower() in ("false", "0"):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = options.get("ssl.certificate.location")
    if cert:
        ctx.load_cert_chain(
            cert, keyfile=options.get("ssl.key.location") or None, password=options.get("ssl.key.password") or None
        )
    return ctx


def faust_credentials(options: Mapping[str, Any]) -> faust.types.auth.CredentialsT | None:
    """Faust's broker_credentials for the librdkafka security options (None = plaintext)."""
    protocol = str(options.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    if protocol not in ("SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise KafkaAuthError(
            f"kafka.client_options.security.protocol: {protocol!r} is not one of "
            "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
        )
    context = ssl_context(options) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = str(options.get("sasl.mechanism") or options.get("sasl.mechanisms") or "PLAIN").upper()
    if mechanism == "GSSAPI":
        return faust.GSSAPICredentials(
            kerberos_service_name=str(options.get("sasl.kerberos.service.name", "kafka")),
            ssl_context=context,
            mechanism=mechanism,
        )
    if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise KafkaAuthError(
            f"kafka.client_options.sasl.mechanism: {mechanism!r} is not supported by the "
            "streams worker (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, GSSAPI)"
        )
    return faust.SASLCredentials(
        username=options.get("sasl.username"),
        password=options.get("sasl.password"),
        ssl_context=context,
        mechanism=mechanism,
    )


def credential_problems(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the streams worker would refuse at start in kafka.client_options' security settings (it
    builds these credentials when it creates the Faust app), as (key, reason); checked by `config check`."""
    try:
        faust_credentials(options)
    except KafkaAuthError as e:
        key, _, reason = str(e).partition(": ")
        return [(key, reason)]
    except (OSError, ValueError) as e:  # a CA, certificate or key file missing or unreadable (ssl.SSLError too)
        return [("kafka.client_options", f"the streams worker cannot build its TLS context: {e}")]
    return []
