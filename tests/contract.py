"""A check every path's end-to-end test runs on what it wrote: exactly the record contract's fields."""
from __future__ import annotations

import json
from typing import Any

from connectors.kafka_io import read_all
from connectors.records import Contract


def read_checked(bootstrap: str, topic: str, contract: Contract) -> list[dict[str, Any]]:
    """Every record of ``topic``, after checking its JSON fields (names and order) and its Kafka key."""
    records = []
    for message in read_all(bootstrap, topic):
        value = json.loads(message.value())
        assert list(value) == contract.names, f"{topic}: fields {list(value)} != contract {contract.names}"
        if contract.key:
            expected = (value[contract.key] or "").encode()
            assert (message.key() or b"") == expected, f"{topic}: Kafka key {message.key()!r} != {contract.key}"
        records.append(value)
    return records
