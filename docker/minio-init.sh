#!/bin/sh
# One-shot (compose service `minio-init`, image minio/mc): create the bucket that holds checkpoints,
# savepoints, models and the cold tier. Idempotent: an existing bucket is left as it is.
set -eu

: "${MINIO_ENDPOINT:=http://minio:9000}"
: "${VIGIL_S3_BUCKET:=vigil}"

mc alias set vigil "$MINIO_ENDPOINT" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "vigil/${VIGIL_S3_BUCKET}"
echo "bucket ${VIGIL_S3_BUCKET} ready at ${MINIO_ENDPOINT}"
