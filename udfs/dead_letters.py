"""What a dead letter keeps of the record it stands for: privacy-safe, bounded, verifiable.

A dead letter must let an operator find and repair the record, without leaking what Vigil
pseudonymises everywhere else, and without growing past what the sink can write:

* the Kafka key becomes ``key_pseudonym`` (the same keyed pseudonym as the entity id elsewhere);
* the payload is kept **encrypted** (AES-256-GCM with a key derived from the pseudonymisation
  secret, so only holders of that secret can read it: ``python -m jobs.dead_letters show``), and
  only its first ``PREFIX_BYTES`` bytes: ``payload_truncated`` says when the original was longer;
* ``payload_bytes`` and ``payload_sha256`` (of the whole original payload) identify it exactly.

``seal()`` (connectors/privacy.py) is the pure function both jobs call; ``SealPayload`` is its vectorized UDF for the
Table job's dead-letter branch (it only ever sees dead letters, so its cost does not matter).
"""
from __future__ import annotations

from typing import Any

import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from connectors.privacy import PREFIX_BYTES, open_payload, payload_key, seal

__all__ = ["PREFIX_BYTES", "SEALED_TYPE", "SealPayload", "open_payload", "seal", "seal_udf"]


SEALED_TYPE = DataTypes.ROW([
    DataTypes.FIELD("key_pseudonym", DataTypes.STRING()),
    DataTypes.FIELD("payload", DataTypes.BYTES()),
    DataTypes.FIELD("payload_bytes", DataTypes.INT()),
    DataTypes.FIELD("payload_sha256", DataTypes.STRING()),
    DataTypes.FIELD("payload_truncated", DataTypes.BOOLEAN()),
])


class SealPayload(ScalarFunction):
    """Vectorized ``seal()``: (record_key, payload) -> ROW (see SEALED_TYPE). The secret is read in open()."""

    def __init__(self, secret_file: str | None) -> None:
        self.secret_file = secret_file

    def open(self, function_context: FunctionContext | None) -> None:
        from vigil.settings import read_pseudonym_secret

        self._secret = read_pseudonym_secret(self.secret_file)
        self._aes = payload_key(self._secret)

    def eval(self, keys: pd.Series, payloads: pd.Series) -> pd.DataFrame:
        rows = [seal(self._secret, k, p, aes_key=self._aes) for k, p in zip(keys, payloads)]
        return pd.DataFrame(rows, columns=[f.name for f in SEALED_TYPE.fields]).astype(object)


def seal_udf(secret_file: str | None) -> Any:
    return udf(SealPayload(secret_file), result_type=SEALED_TYPE, func_type="pandas")
