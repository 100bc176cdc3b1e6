"""Run a Flink SQL script from jobs/sql/ on the local standalone cluster.

    python -m jobs.run_sql jobs/sql/score_events.sql --telemetry-topic telemetry \\
        --scored-topic telemetry.scored.sql --model-store file:///path/to/models [--bounded] [--wait]

The script is a plain ``sql-client.sh -f`` file with ``${NAME}`` placeholders (see the header of
jobs/sql/score_events.sql). This command looks the telemetry topic's Avro schema up in the schema
store and the model's feature list in the model store, fills the placeholders in (the column
lists are generated from the schema, so replayed topics with other columns work too), writes the
result to ``<home>/sql/<script>-<scored topic>.rendered.sql``, creates the output topic and
submits the script with ``sql-client.sh``. It prints the job id; ``--wait`` then waits for a
``--bounded`` job to finish. The cluster must be running (``python -m stack cluster up``).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from connectors import flink_kafka, schema_store
from connectors.avro_serde import roles
from connectors.errors import ConnectorError, SchemaError
from connectors.kafka_io import check_broker
from connectors.model_store import ModelStore, ModelStoreError
from connectors.topics import create_topic
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster, parse_job_id
from stack.settings import StackSettings

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_MAX_LENGTH = 0x7FFFFFFF  # DataTypes.STRING() / BYTES() are VARCHAR / VARBINARY of this length


class RunSqlSettings(BaseModel):
    """What to run and with which topics and model; from CLI flags, defaults from the stack settings."""

    script: Path
    telemetry_topic: str
    scored_topic: str
    model_store: str
    model_version: str = "latest"
    model_refresh_seconds: float = Field(30.0, ge=0)
    bootstrap_servers: str
    group_id: str | None = None
    bounded: bool = False
    wait: bool = False
    timeout: float = Field(600.0, gt=0)
    parallelism: int = Field(1, ge=1)
    scored_partitions: int = Field(3, ge=1)
    define: dict[str, str] = {}

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> RunSqlSettings:
        stack = StackSettings.from_env()
        p = argparse.ArgumentParser(prog="python -m jobs.run_sql", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("script", type=Path, help="a .sql file with ${NAME} placeholders (jobs/sql/)")
        p.add_argument("--telemetry-topic", required=True, help="input topic (its schema must be registered)")
        p.add_argument("--scored-topic", required=True, help="output topic (created if missing)")
        p.add_argument("--model-store", default=(stack.home / "models").as_uri(),
                       help="model store: a path, file:// URI or s3://bucket/prefix")
        p.add_argument("--model-version", default="latest", help="a version id, or latest (hot-swapped)")
        p.add_argument("--model-refresh-seconds", type=float, default=30.0)
        p.add_argument("--bootstrap-servers", default=stack.bootstrap_servers)
        p.add_argument("--group-id", help="Kafka consumer group (default: vigil-sql-<script>-<topic>)")
        p.add_argument("--bounded", action="store_true", help="stop at the offsets latest at submission")
        p.add_argument("--wait", action="store_true", help="wait for the job to end (use with --bounded)")
        p.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits")
        p.add_argument("--parallelism", type=int, default=1)
        p.add_argument("--scored-partitions", type=int, default=3)
        p.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                       help="value for a further placeholder of the script (repeatable)")
        args = vars(p.parse_args(argv))
        define = {}
        for item in args.pop("define"):
            name, sep, value = item.partition("=")
            if not sep or not PLACEHOLDER.fullmatch(f"${{{name}}}"):
                raise ValueError(f"--define wants NAME=VALUE with an upper-case NAME, got {item!r}")
            define[name] = value
        return cls(**args, define=define)

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"vigil-sql-{self.script.stem}-{self.telemetry_topic}"


# --- rendering ------------------------------------------------------------------------------------

def sql_literal(value: str) -> str:
    """``value`` made safe inside a single-quoted SQL string (quotes doubled)."""
    return str(value).replace("'", "''")


def sql_type(dtype: Any) -> str:
    """The Flink SQL type of a PyFlink DataType, with NOT NULL where the column is not nullable."""
    from pyflink.table import types as t

    if isinstance(dtype, t.VarCharType):
        name = "STRING" if dtype.length == _MAX_LENGTH else f"VARCHAR({dtype.length})"
    elif isinstance(dtype, t.VarBinaryType):
        name = "BYTES" if dtype.length == _MAX_LENGTH else f"VARBINARY({dtype.length})"
    elif isinstance(dtype, t.TimestampType):
        name = f"TIMESTAMP({dtype.precision})"
    elif isinstance(dtype, (t.DoubleType, t.FloatType, t.IntType, t.BigIntType, t.BooleanType)):
        name = dtype.type_name()
    else:
        raise SchemaError(f"no SQL rendering for column type {dtype!r}")
    return name if dtype._nullable else f"{name} NOT NULL"


def _flink_escape(text: str, delimiters: str) -> str:
    """Quote a list/map element the way Flink's own config writer does (StructuredOptionsSplitter)."""
    if any(c in text for c in delimiters + "'\""):
        return "'" + text.replace("'", "''") + "'"
    return text


def job_parameters(params: dict[str, str]) -> str:
    """``pipeline.global-job-parameters`` in Flink's map syntax (``k1:v1,k2:v2``), quoted where a key
    or value holds ':' or ',' (model URIs such as file:// and s3:// do)."""
    entries = (_flink_escape(f"{_flink_escape(k, ':')}:{_flink_escape(str(v), ':')}", ",")
               for k, v in params.items())
    return ",".join(entries)


def placeholders(settings: RunSqlSettings, schema: dict[str, Any], manifest: dict[str, Any],
                 stack: StackSettings) -> dict[str, str]:
    """The values of every placeholder score_events.sql (and scripts like it) may use.

    Raises SchemaError when the model needs a feature the topic does not have.
    """
    columns = flink_kafka.physical_columns(schema)
    names = [name for name, _ in columns]
    features = list(manifest["features"]["names"])
    missing = [f for f in features if f not in names]
    if missing:
        raise SchemaError(f"model {manifest['version']} needs columns {missing} that topic "
                          f"{settings.telemetry_topic!r} does not have (its columns: {names})")
    entity = roles(schema)["entity"]
    if not entity:
        raise SchemaError(f"the schema of {settings.telemetry_topic!r} names no vigil.entity column")
    model_uri = settings.model_store
    if "://" not in model_uri:  # the Python workers run elsewhere: a relative path would not resolve
        model_uri = str(Path(model_uri).resolve())
    params = {"vigil.model.uri": model_uri, "vigil.model.version": settings.model_version,
              "vigil.model.refresh-seconds": f"{settings.model_refresh_seconds:g}"}
    if model_uri.startswith(("s3://", "s3a://")):
        params.update({"vigil.s3.endpoint": stack.s3_endpoint, "vigil.s3.access-key": stack.s3_access_key,
                       "vigil.s3.secret-key": stack.s3_secret_key.get_secret_value()})
    values = {
        "TELEMETRY_TOPIC": settings.telemetry_topic,
        "SCORED_TOPIC": settings.scored_topic,
        "BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "GROUP_ID": settings.consumer_group,
        "SCAN_BOUNDED_MODE": "latest-offset" if settings.bounded else "unbounded",
        "PARALLELISM": str(settings.parallelism),
        "PYTHON_EXECUTABLE": sys.executable,
        "MODEL_URI": model_uri,
        "JOB_PARAMETERS": job_parameters(params),
        "ENTITY_COLUMN": entity,
    }
    values = {k: sql_literal(v) for k, v in values.items()}
    values.update({k: sql_literal(v) for k, v in settings.define.items()})
    # generated SQL fragments (identifiers are back-quoted; not string literals)
    values.update({
        "TELEMETRY_COLUMNS": ",\n  ".join(f"`{name}` {sql_type(dtype)}" for name, dtype in columns),
        "TELEMETRY_COLUMN_NAMES": ", ".join(f"`{name}`" for name in names),
        "FEATURE_COLUMNS": ", ".join(f"`{name}`" for name in features),
    })
    return values


def render(text: str, values: dict[str, str], source: str = "script") -> str:
    """Fill ``${NAME}`` placeholders; lines that are ``--`` comments are left as written.

    Raises ValueError naming every placeholder without a value (and the first line it is on).
    """
    missing: dict[str, int] = {}
    out = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.lstrip().startswith("--"):
            out.append(line)
            continue
        for name in PLACEHOLDER.findall(line):
            if name not in values:
                missing.setdefault(name, number)
        out.append(PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), line))
    if missing:
        where = ", ".join(f"${{{n}}} (line {line})" for n, line in missing.items())
        raise ValueError(f"{source}: no value for placeholder(s) {where}; pass --define NAME=VALUE")
    return "".join(out)


def rendered_path(settings: RunSqlSettings, stack: StackSettings) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", settings.scored_topic)
    return stack.home / "sql" / f"{settings.script.stem}-{safe}.rendered.sql"


def render_script(settings: RunSqlSettings, stack: StackSettings, schema: dict[str, Any],
                  manifest: dict[str, Any]) -> Path:
    """Write the rendered script (owner-readable only: job parameters may hold S3 keys)."""
    if not settings.script.is_file():
        raise ValueError(f"no SQL script at {settings.script}")
    text = render(settings.script.read_text(), placeholders(settings, schema, manifest, stack), str(settings.script))
    path = rendered_path(settings, stack)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(text)
    return path


# --- submission -----------------------------------------------------------------------------------

def sql_client_command(cluster: LocalFlinkCluster, rendered: Path) -> list[str]:
    """``sql-client.sh -f`` against the cluster (its conf dir names the REST address and port).

    ``-pyexec``/``-pyclientexec`` name the project's interpreter, which has the project installed
    (editable), so ``udfs.anomaly_score`` imports in the client and in the TaskManager's Python
    workers without shipping files; ``-pyfs <project root>`` would register the whole tree as a job
    file, virtualenv and .vigil included. opt/flink-python needs no flag either: registering a
    Python function makes the table ResourceManager add that jar to the job's jars.
    """
    return [str(cluster.script("sql-client.sh")), "-f", str(rendered),
            "-pyexec", sys.executable, "-pyclientexec", sys.executable,
            "-Dexecution.target=remote"]


def submit(cluster: LocalFlinkCluster, rendered: Path, timeout: float = 300.0) -> str:
    """Run the rendered script with sql-client.sh; returns the id of the job its INSERT started."""
    cluster.require()
    command = sql_client_command(cluster, rendered)
    try:
        result = subprocess.run(command, env=cluster.environment(), capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise FlinkClusterError(f"sql-client.sh did not finish {rendered} within {timeout:.0f}s") from exc
    output = result.stdout + "\n" + result.stderr
    job_id = parse_job_id(output)
    if result.returncode != 0 or "[ERROR]" in output or job_id is None:
        tail = "\n".join(output.strip().splitlines()[-60:])
        raise FlinkClusterError(f"sql-client.sh -f {rendered} failed (exit {result.returncode}"
                                f"{', no job id printed' if job_id is None else ''}):\n{tail}")
    return job_id


def run(settings: RunSqlSettings, stack: StackSettings) -> str:
    """Check inputs, render, create the output topic and submit; returns the job id."""
    cluster = LocalFlinkCluster(stack)
    cluster.require()  # fail before any Kafka work when there is nowhere to run
    check_broker(settings.bootstrap_servers)
    schema = schema_store.require(settings.bootstrap_servers, settings.telemetry_topic)
    store = ModelStore(settings.model_store, stack if settings.model_store.startswith(("s3://", "s3a://")) else None)
    manifest = store.manifest(settings.model_version)
    rendered = render_script(settings, stack, schema, manifest)
    create_topic(settings.bootstrap_servers, settings.scored_topic, settings.scored_partitions)
    return submit(cluster, rendered)


def main(argv: list[str] | None = None) -> int:
    stack = StackSettings.from_env()
    try:
        settings = RunSqlSettings.from_args(argv)
        started = time.monotonic()
        job_id = run(settings, stack)
        print(f"submitted job {job_id}: {settings.script.name} {settings.telemetry_topic} -> "
              f"{settings.scored_topic} on {LocalFlinkCluster(stack).rest_url}", flush=True)
        if settings.wait:
            state = LocalFlinkCluster(stack).wait_for_job(job_id, settings.timeout)
            print(f"job {job_id} {state} after {time.monotonic() - started:.1f}s", flush=True)
            if state != "FINISHED":
                failure = LocalFlinkCluster(stack).job_exception(job_id)
                print(f"error: job {job_id} ended {state}" + (f":\n{failure}" if failure else ""), file=sys.stderr)
                return 1
    except (ConnectorError, ModelStoreError, FlinkClusterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
