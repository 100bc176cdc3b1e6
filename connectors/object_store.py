"""The object tier: local paths or an S3-compatible server (s3proxy locally, MinIO on a cluster)."""
from __future__ import annotations

import pyarrow.fs as pafs

from vigil.settings import S3Settings


def s3_filesystem(s3: S3Settings) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem for the store ``s3`` names (path-style addressing).

    Settings without keys (what a job ships to its workers) get them from this process's own
    settings: the TaskManager's environment or the local stack's secrets.
    """
    access_key, secret_key = s3.with_worker_credentials().require_credentials()
    scheme, _, host_port = s3.endpoint.partition("://")
    return pafs.S3FileSystem(
        access_key=access_key,
        secret_key=secret_key,
        endpoint_override=host_port,
        scheme=scheme,
        region=s3.region,
        force_virtual_addressing=False,
        allow_bucket_creation=True,
        connect_timeout=3,
        request_timeout=10,
    )
