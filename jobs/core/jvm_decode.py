"""Decode on the JVM: ``VIGIL_DECODE``, the Java twin of udfs/preprocess.DecodeTelemetry.

The scoring job's first step turns each raw Kafka record into the schema's columns, the entity
pseudonym and an ``error`` column (null when the record is usable). In Python that step is a
pandas UDF, a full round trip through Arrow and a Python worker before validation and scoring
cross into Python again. ``VIGIL_DECODE`` (connectors/jvm, built by ``make setup`` into
``<home>/jvm/target/vigil-flink-functions.jar``) does the same on the JVM, so the job keeps one
Python stage (validate + score):

* the same decisions and reason texts (``undecodable: ...``, ``impossible_value: ...``), the
  same values, byte-identical pseudonyms (tests/jobs/test_jvm_decode.py checks both on good and
  hostile records, and on all three payload formats: avro, confluent, json);
* the same table: ``decoded(raw, keep, schema, secret_file, jar)`` is the ``decoded`` table
  jobs/core/scoring.build declares with the Python decode (the kept raw columns, then the
  columns of ``udfs.preprocess.output_columns(schema)``), one lateral-join row per record;
* the secret never enters the plan: the function is given the secret's *file* and each task
  reads the secret in ``open()`` (``VIGIL_PSEUDONYM_SECRET`` in the TaskManager's environment
  first, as the Python workers do).

Where the Python decode fails its job, the JVM one keeps the record as a dead letter instead: an
Avro ``int`` beyond 32 bits, and in JSON payloads integers too large for their column or for a
float, a non-string in a bytes column, a time beyond 64 bits of milliseconds, an entity id with a
lone surrogate, nesting deeper than 990 levels. connectors/jvm/README.md lists the reasons.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyflink.table import Table
from pyflink.table.expressions import call, col, lit

from connectors.avro_serde import SCHEMA_HEADER, schema_id
from connectors.errors import ConnectorError
from vigil.settings import VigilSettings

FUNCTION = "VIGIL_DECODE"
FUNCTION_CLASS = "dev.vigil.flink.DecodeRecord"
JAR_NAME = "vigil-flink-functions.jar"
_JARS_KEY = "pipeline.jars"


class JvmDecodeError(ConnectorError):
    """The JVM decode cannot be used (jar missing or built for another Flink); the message says what to run."""


def jar_path(settings: VigilSettings) -> Path:
    """Where ``make setup`` puts the functions' jar: ``<home>/jvm/target/vigil-flink-functions.jar``."""
    return settings.home / "jvm" / "target" / JAR_NAME


def check_jar(jar: Path | str) -> Path:
    """``jar`` if it exists and was built for the installed Flink (JvmDecodeError otherwise)."""
    import pyflink.version

    path = Path(jar)
    if not path.is_file():
        raise JvmDecodeError(f"{path} does not exist; build it with `make setup` (Maven, connectors/jvm)")
    with zipfile.ZipFile(path) as archive:
        props = archive.read("vigil-flink-functions.properties").decode()
    built = dict(line.split("=", 1) for line in props.splitlines() if "=" in line and not line.startswith("#"))
    if built.get("flink.version") != pyflink.version.__version__:
        raise JvmDecodeError(f"{path} was built for Flink {built.get('flink.version')}, the installed PyFlink is "
                             f"{pyflink.version.__version__}; rebuild it with `make setup`")
    return path


def register(t_env: Any, jar: Path | str) -> None:
    """Ship ``jar`` with the job (``pipeline.jars``, other jars kept) and register VIGIL_DECODE once."""
    from pyflink.common import Configuration

    path = check_jar(jar)
    config = t_env.get_config()
    url = path.resolve().as_uri()
    # flink run gives the list in YAML form (['file:...flink-python.jar']), a local job as a;b
    jars = [str(j) for j in Configuration.parse_list_value(config.get(_JARS_KEY, "") or "") if j]
    if url not in jars:
        config.set(_JARS_KEY, ";".join([*jars, url]))
    if FUNCTION.lower() not in {f.lower() for f in t_env.list_user_defined_functions()}:
        t_env.create_java_temporary_function(FUNCTION, FUNCTION_CLASS)


_SCHEMA_KEYS = ("type", "name", "vigil.format", "vigil.confluent_id", "vigil.entity", "vigil.time", "vigil.label")


def spec(schema: dict[str, Any], secret_file: str | None) -> str:
    """The literal VIGIL_DECODE is called with: the schema, its ``vigil.schema`` id, the secret's file.

    The schema keeps only what decoding reads (field names and types, roles, format): the literal
    appears in every plan. It holds no secret (a path only, as the Python decode's pickled state does).
    """
    reduced = {k: schema[k] for k in _SCHEMA_KEYS if k in schema}
    reduced["fields"] = [{"name": f["name"], "type": f["type"]} for f in schema["fields"]]
    return json.dumps({"schema": reduced, "schema_id": schema_id(schema), "secret_file": secret_file},
                      separators=(",", ":"))


def decoded(raw: Table, keep: Sequence[str], schema: dict[str, Any], secret_file: str | None,
            jar: Path | str) -> Table:
    """``keep`` columns of ``raw`` + the decoded columns + ``error``: the scoring job's decode step on the JVM.

    The same table ``jobs.core.scoring.build`` declares with the Python decode::

        raw.select(*keep, decode_udf(schema, secret_file)(payload, headers[vigil.schema]).alias("d"))
           .select(*keep, *[col("d").get(name) for name, _ in output_columns(schema)])

    (the names and types of ``udfs.preprocess.output_columns(schema)``, in that order), computed by
    VIGIL_DECODE in a lateral join: once per record, in the JVM. ``raw``: a table with the columns
    of ``connectors.flink_kafka.raw_source`` (``payload``, ``kafka_headers``, ...).
    """
    from udfs.preprocess import output_columns

    names = [name for name, _ in output_columns(schema)]
    return decoded_row(raw, schema, secret_file, jar, column="_decoded").select(
        *[col(c) for c in keep], *[col("_decoded").get(n).alias(n) for n in names])


def decoded_row(raw: Table, schema: dict[str, Any], secret_file: str | None, jar: Path | str, *,
                column: str = "d") -> Table:
    """``raw`` + one ROW column ``column``: the decoded row (the fields of ``output_columns(schema)``)."""
    from pyflink.table import DataTypes

    from udfs.preprocess import output_columns

    register(raw._t_env, jar)
    record = call(FUNCTION, col("payload"), col("kafka_headers").at(SCHEMA_HEADER), lit(spec(schema, secret_file)))
    row_type = DataTypes.ROW([DataTypes.FIELD(name, dtype) for name, dtype in output_columns(schema)])
    # The function emits Flink's internal rows; the cast (a no-op the planner drops) gives the column
    # the default external classes, which the DataStream boundary (scoring.computed_once) expects.
    return raw.join_lateral(record.alias("_vigil_decode")).select(
        *[col(c) for c in raw.get_schema().get_field_names()], col("_vigil_decode").cast(row_type).alias(column))
