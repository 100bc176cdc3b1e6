"""The object tier: local paths or an S3-compatible server (s3proxy locally, MinIO on a cluster)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow.fs as pafs

if TYPE_CHECKING:
    from stack.settings import StackSettings


def s3_filesystem(settings: StackSettings) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem for the configured endpoint (path-style, plain HTTP on loopback)."""
    scheme, _, host_port = settings.s3_endpoint.partition("://")
    return pafs.S3FileSystem(
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        endpoint_override=host_port,
        scheme=scheme,
        region="us-east-1",
        force_virtual_addressing=False,
        allow_bucket_creation=True,
        connect_timeout=3,
        request_timeout=10,
    )
