"""Exceptions raised by the connectors package."""
from __future__ import annotations


class ConnectorError(RuntimeError):
    """Base class for connector failures."""


class BrokerUnavailable(ConnectorError, ConnectionError):
    """No Kafka broker answers at the configured bootstrap address."""


class DecodeError(ConnectorError, ValueError):
    """Bytes could not be decoded with the expected Avro schema."""


class SchemaError(ConnectorError, ValueError):
    """A schema is missing, malformed or does not match what a job expects."""
