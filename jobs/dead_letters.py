"""Read a dead-letter topic: why each record was refused, and (with the secret) what it was.

    vigil dlq telemetry.dlq [--count 20] [--open]

Dead letters keep their payload sealed (AES-GCM, a key derived from the pseudonymisation secret;
udfs/dead_letters.py). ``--open`` unseals the payloads with this install's secret and, when the
payload decodes with the source topic's registered schema, shows the record (its entity id in
the clear: whoever holds the secret may see it).
"""
from __future__ import annotations

import base64
import json
import sys
from collections import Counter

from connectors import schema_store
from connectors.avro_serde import AvroDeserializer
from connectors.errors import ConnectorError
from connectors.kafka_io import read_all
from udfs.dead_letters import open_payload
from vigil.commands import Options, command, option
from vigil.settings import SettingsError, VigilSettings, read_pseudonym_secret


class DeadLetterOptions(Options):
    topic: str = option(..., "the dead-letter topic (<input>.dlq)", argument=True, metavar="TOPIC")
    count: int = option(20, "dead letters to show (the newest); the reasons are counted over all", ge=0)
    open: bool = option(False, "unseal the payloads with this install's pseudonymisation secret")


def run(settings: VigilSettings, o: DeadLetterOptions) -> int:
    letters = [json.loads(m.value()) for m in read_all(settings.bootstrap_servers, o.topic)]
    print(f"{len(letters)} dead letter(s) in {o.topic}: "
          + (", ".join(f"{stage} {n}" for stage, n in Counter(d["stage"] for d in letters).most_common()) or "none"))
    secret = read_pseudonym_secret(settings.pseudonym.secret_file, secret=settings.pseudonym.secret) if o.open else None
    decoders: dict[str, AvroDeserializer | None] = {}
    for letter in letters[-o.count:] if o.count else []:
        print(f"  {letter['source_topic']} p{letter['source_partition']}@{letter['source_offset']} "
              f"{letter['source_timestamp']}  key {letter['key_pseudonym']}  {letter['payload_bytes']} bytes"
              f"{' (kept: a prefix)' if letter['payload_truncated'] else ''}  {letter['reason'][:160]}")
        if secret is None or not letter.get("payload"):
            continue
        raw = open_payload(secret, base64.b64decode(letter["payload"]))
        topic = letter["source_topic"]
        if topic not in decoders:
            schema = schema_store.lookup(settings.bootstrap_servers, topic)
            decoders[topic] = AvroDeserializer(schema) if schema else None
        try:
            shown = json.dumps(decoders[topic](raw), default=str) if decoders[topic] else None
        except ValueError:
            shown = None
        print(f"      {shown or raw[:200]!r}")
    return 0


COMMAND = command("dead-letters", __doc__, run, options=DeadLetterOptions, settings_flags=(
    "kafka.bootstrap_servers", "pseudonym.secret_file"), expected_errors=(ConnectorError, SettingsError, ValueError),
    prog="python -m jobs.dead_letters")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
