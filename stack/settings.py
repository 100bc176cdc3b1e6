"""Typed settings for the local stack, read once at the edge (CLI flags or environment)."""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class StackSettings(BaseModel):
    """Where the stack keeps its files and which loopback ports it listens on.

    Environment variables (all optional): ``VIGIL_HOME`` (default ``<project>/.vigil``),
    ``VIGIL_KAFKA_PORT`` (9092), ``VIGIL_KAFKA_CONTROLLER_PORT`` (9093), ``VIGIL_S3_PORT`` (9000),
    ``VIGIL_S3_ACCESS_KEY`` / ``VIGIL_S3_SECRET_KEY``, ``VIGIL_S3_BUCKET`` (vigil),
    ``VIGIL_MQTT_PORT`` (1883), ``VIGIL_FLINK_REST_PORT`` (8081), ``VIGIL_S3_ENDPOINT`` (an S3 server
    elsewhere, e.g. http://minio:9000 in docker-compose; default: the local s3proxy).
    """

    home: Path = PROJECT_ROOT / ".vigil"
    host: str = "127.0.0.1"
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    s3_port: int = Field(9000, ge=1, le=65535)
    s3_access_key: str = "vigil"
    s3_secret_key: SecretStr = SecretStr("vigil-local-secret")
    s3_bucket: str = "vigil"
    s3_endpoint_override: str | None = None
    mqtt_port: int = Field(1883, ge=1, le=65535)
    flink_rest_port: int = Field(8081, ge=1, le=65535)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> StackSettings:
        env = os.environ if environ is None else environ
        mapping = {
            "home": "VIGIL_HOME",
            "kafka_port": "VIGIL_KAFKA_PORT",
            "kafka_controller_port": "VIGIL_KAFKA_CONTROLLER_PORT",
            "s3_port": "VIGIL_S3_PORT",
            "s3_access_key": "VIGIL_S3_ACCESS_KEY",
            "s3_secret_key": "VIGIL_S3_SECRET_KEY",
            "s3_bucket": "VIGIL_S3_BUCKET",
            "s3_endpoint_override": "VIGIL_S3_ENDPOINT",
            "mqtt_port": "VIGIL_MQTT_PORT",
            "flink_rest_port": "VIGIL_FLINK_REST_PORT",
        }
        return cls(**{field: env[var] for field, var in mapping.items() if env.get(var)})

    # --- derived locations -------------------------------------------------------------------
    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def flink_home(self) -> Path:
        return self.home / "flink"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return self.s3_endpoint_override or f"http://{self.host}:{self.s3_port}"
