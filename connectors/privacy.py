"""What Vigil writes about an entity instead of its identity: keyed pseudonyms and sealed payloads.

* ``pseudonym(secret, id)``: the stable, keyed pseudonym (HMAC-SHA256) every output carries in place of
  an entity id; without the secret it can be neither reversed nor recomputed.
* ``seal(secret, key, payload)``: what a dead letter keeps of the record it stands for: the key as a
  pseudonym, the payload's first ``PREFIX_BYTES`` bytes encrypted (AES-256-GCM, key derived from the
  secret: only its holders read it, ``open_payload``), the whole payload's size and SHA-256.

The jobs' DLQ (udfs/dead_letters.py) and the MQTT bridge's DLQ both seal with these.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any


def pseudonym(secret: bytes, entity: str) -> str:
    """Stable keyed pseudonym: ``p-`` + 20 hex of HMAC-SHA256(secret, entity).

    Without the secret the mapping cannot be reversed or recomputed; with it, the same entity
    always gets the same pseudonym, so per-vehicle state and history still line up.
    """
    return "p-" + hmac.new(secret, entity.encode(), hashlib.sha256).hexdigest()[:20]


PREFIX_BYTES = 64 * 1024     # base64 makes this ~88 KB of JSON: far below a sink's 1 MB request limit
_VERSION = b"v1"
_INFO = b"vigil dead-letter payload v1"


def payload_key(secret: bytes) -> bytes:
    """The AES-256 key of dead-letter payloads, derived from the pseudonymisation secret (HKDF-SHA256)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


def seal(secret: bytes, key: bytes | None, payload: bytes | None, *, aes_key: bytes | None = None) -> dict[str, Any]:
    """The dead-letter fields for a record's raw key and payload (see the module docstring)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    out: dict[str, Any] = {"key_pseudonym": None if key is None else pseudonym(secret, bytes(key).decode("utf-8",
                                                                                                          "replace")),
                           "payload": None, "payload_bytes": None, "payload_sha256": None, "payload_truncated": None}
    if payload is None:
        return out
    payload = bytes(payload)
    nonce = os.urandom(12)
    kept = payload[:PREFIX_BYTES]
    out.update(payload=_VERSION + nonce + AESGCM(aes_key or payload_key(secret)).encrypt(nonce, kept, None),
               payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest(),
               payload_truncated=len(payload) > PREFIX_BYTES)
    return out


def open_payload(secret: bytes, sealed: bytes) -> bytes:
    """The original payload (prefix) of a dead letter; ValueError when the secret does not open it."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not sealed or sealed[:2] != _VERSION:
        raise ValueError("not a sealed dead-letter payload (expected version v1)")
    try:
        return AESGCM(payload_key(secret)).decrypt(sealed[2:14], sealed[14:], None)
    except InvalidTag:
        raise ValueError("this secret does not open the payload (another install's dead letter?)") from None


def same_key(secret: bytes, key_pseudonym: str | None, raw_key: bytes) -> bool:
    """Whether a dead letter's ``key_pseudonym`` is that of ``raw_key`` (for operators looking one up)."""
    return key_pseudonym is not None and hmac.compare_digest(key_pseudonym, pseudonym(secret, raw_key.decode()))
