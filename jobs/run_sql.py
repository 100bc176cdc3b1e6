"""Run a Flink SQL script from jobs/sql/ on the local standalone cluster.

    python -m jobs.run_sql jobs/sql/score_events.sql --telemetry-topic telemetry \
        --scored-topic telemetry.scored.sql [--model-store file:///path/to/models] [--bounded] [--wait]

The script is a plain ``sql-client.sh -f`` file with ``${NAME}`` placeholders (see the header of
jobs/sql/score_events.sql). This command looks the telemetry topic's Avro schema up in the schema
store and the model's feature list in the model store, fills the placeholders in (column lists
from the schema, the scored record's columns and values from the record contract in
connectors/records.py), writes the result to ``<home>/sql/<script>-<scored topic>.rendered.sql``,
creates the output topic and submits the script with ``sql-client.sh``. It prints the job id;
--wait then waits for a --bounded job to finish. The cluster must be running
(``python -m stack cluster up``).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from connectors import flink_kafka, schema_store
from connectors.errors import ConnectorError, SchemaError
from connectors.flink_kafka import sql_type
from connectors.kafka_io import DEFAULT_PARTITIONS, check_broker, create_topic
from connectors.model_registry import ModelRef, ModelRegistry
from connectors.model_store import ModelStoreError
from connectors.records import outputs
from udfs.anomaly_score import REFRESH_SECONDS
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster, parse_job_id
from vigil.commands import Options, command, option
from vigil.settings import VigilSettings, write_secret_file

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def _definition(text: str) -> dict[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not PLACEHOLDER.fullmatch(f"${{{name}}}"):
        raise ValueError(f"--define wants NAME=VALUE with an upper-case NAME, got {text!r}")
    return {name: value}


class RunSqlOptions(Options):
    """What to run, with which topics and model."""

    script: Path = option(..., "a .sql file with ${NAME} placeholders (jobs/sql/)", argument=True, metavar="SCRIPT")
    telemetry_topic: str = option(..., "input topic (its schema must be registered)")
    scored_topic: str = option(..., "output topic (created if missing)")
    model: str | None = option(None, "model: name@alias (followed), name@N or name", show_default="<telemetry-topic>@champion")
    model_refresh_seconds: float = option(REFRESH_SECONDS, "how often workers look where the alias points (0 = never)",
                                          ge=0)
    group_id: str | None = option(None, "Kafka consumer group", show_default="vigil-sql-<script>-<topic>")
    bounded: bool = option(False, "stop at the offsets that were latest at submission")
    wait: bool = option(False, "wait for the job to end (use with --bounded)")
    timeout: float = option(600.0, "seconds --wait waits", gt=0)
    parallelism: int = option(1, "parallelism of the job", ge=1)
    scored_partitions: int = option(DEFAULT_PARTITIONS, "partitions of the output topic if it is created", ge=1)
    define: dict[str, str] = option({}, "value for a further placeholder of the script, NAME=VALUE (repeatable)",
                                    parse=_definition, many=True, metavar="NAME=VALUE", show_default=False)

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef.parse(self.model or self.telemetry_topic)

    @property
    def consumer_group(self) -> str:
        return self.group_id or f"vigil-sql-{self.script.stem}-{self.telemetry_topic}"


# --- rendering ------------------------------------------------------------------------------------

def sql_literal(value: str) -> str:
    """``value`` made safe inside a single-quoted SQL string (quotes doubled)."""
    return str(value).replace("'", "''")


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


def placeholders(options: RunSqlOptions, settings: VigilSettings, schema: dict[str, Any],
                 manifest: dict[str, Any]) -> dict[str, str]:
    """The values of every placeholder score_events.sql (and scripts like it) may use.

    Raises SchemaError when the model needs a feature the topic does not have.
    """
    columns = flink_kafka.physical_columns(schema)
    names = [name for name, _ in columns]
    features = list(manifest["features"]["names"])
    missing = [f for f in features if f not in names]
    if missing:
        raise SchemaError(f"model {manifest['version']} needs columns {missing} that topic "
                          f"{options.telemetry_topic!r} does not have (its columns: {names})")
    out = outputs(schema)
    model_uri = settings.model_store
    if "://" not in model_uri:  # the Python workers run elsewhere: a relative path would not resolve
        model_uri = str(Path(model_uri).resolve())
    params = {"vigil.model.uri": model_uri, "vigil.model.ref": str(options.model_ref),
              "vigil.model.refresh-seconds": f"{options.model_refresh_seconds:g}"}
    if settings.pseudonym.secret_file:
        params["vigil.pseudonym.secret-file"] = str(Path(settings.pseudonym.secret_file).resolve())
    if model_uri.startswith(("s3://", "s3a://")):  # the address only: workers read the keys themselves
        params["vigil.s3.endpoint"] = settings.s3.endpoint
    values = {
        "TELEMETRY_TOPIC": options.telemetry_topic,
        "SCORED_TOPIC": options.scored_topic,
        "BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "GROUP_ID": options.consumer_group,
        "TRANSACTIONAL_ID_PREFIX": f"{options.consumer_group}-{options.scored_topic}",
        "SCAN_BOUNDED_MODE": "latest-offset" if options.bounded else "unbounded",
        "PARALLELISM": str(options.parallelism),
        "PYTHON_EXECUTABLE": sys.executable,
        "MODEL_URI": model_uri,
        "JOB_PARAMETERS": job_parameters(params),
        "SCORED_KEY": out.scored.key or "",
    }
    values = {k: sql_literal(v) for k, v in values.items()}
    values.update({k: sql_literal(v) for k, v in options.define.items()})
    values["KAFKA_CONNECTION"] = kafka_connection(settings)
    # generated SQL fragments (identifiers are back-quoted; not string literals)
    values.update({
        "TELEMETRY_COLUMNS": ",\n  ".join(f"`{name}` {sql_type(dtype)}" for name, dtype in columns),
        "SCORED_COLUMNS": out.scored.sql_columns(),
        "SCORED_SELECT": ",\n       ".join(scored_select(schema)),
        **context_fragments(schema, names, features, int(manifest["features"].get("window") or 1)),
    })
    return values


def context_fragments(schema: dict[str, Any], names: list[str], features: list[str], window: int) -> dict[str, str]:
    """FEATURE_COLUMNS (ANOMALY's arguments), SCORING_INPUT (what it reads) and PROC_COLUMN.

    A point model reads the telemetry table's columns. A model with a window reads each reading with
    its entity's ``window - 1`` previous ones: LAG over an OVER window per raw entity id in arrival
    order (processing time), the arguments laid out as the jobs pass them (jobs/core/scoring)."""
    from jobs.core.scoring import context_columns, context_time, lag_expressions

    out = outputs(schema)
    if window <= 1:
        return {"FEATURE_COLUMNS": ", ".join(f"`{name}`" for name in features), "SCORING_INPUT": "telemetry",
                "PROC_COLUMN": ""}
    time_col = context_time(out)
    entity = out.entity.removesuffix("_pseudonym")
    lags = lag_expressions(features, window, time_col)
    keep = [f"`{c}`" for c in [*names, "kafka_partition", "kafka_offset", "kafka_timestamp"]]
    return {
        "FEATURE_COLUMNS": ", ".join(f"`{c}`" for c in context_columns(features, window, time_col)),
        "SCORING_INPUT": (f"(SELECT {', '.join(keep)},\n    {', '.join(lags)}\n  FROM telemetry "
                          f"WINDOW w AS (PARTITION BY `{entity}` ORDER BY `_proc`))"),
        "PROC_COLUMN": ",\n  `_proc` AS PROCTIME()",
    }


def kafka_connection(settings: VigilSettings) -> str:
    """The Kafka tables' connection options as SQL: bootstrap servers and, with SASL_SSL, the login.

    From connectors.flink_kafka.table_options, so the SQL tables connect exactly like the Python
    jobs' Kafka tables; the SASL password is not in the script (it names the 0600 file that Kafka's
    FileConfigProvider reads inside the Flink JVMs). Raises SettingsError naming a missing login
    or CA file.
    """
    return ",\n  ".join(f"'{sql_literal(key)}' = '{sql_literal(value)}'"
                         for key, value in flink_kafka.table_options(settings.bootstrap_servers).items())


def scored_select(schema: dict[str, Any]) -> list[str]:
    """One SQL expression per column of the scored record (connectors/records.py), in order."""
    out = outputs(schema)
    entity = out.entity.removesuffix("_pseudonym")
    special = {out.entity: f"PSEUDONYM(`{entity}`)", "score": "s.score", "is_anomaly": "s.is_anomaly",
               "model_version": "s.model_version", "partial": "s.partial", "source_partition": "kafka_partition",
               "source_offset": "kafka_offset", **out.derived}
    return [f"CAST({special.get(c.name, f'`{c.name}`')} AS {sql_type(c.type)}) AS `{c.name}`"
            for c in out.scored.columns]


def render(text: str, values: dict[str, str], source: str = "script") -> str:
    """Fill ``${NAME}`` placeholders; lines that are ``--`` comments are left as written.

    Raises ValueError naming every placeholder without a value (and the first line it is on), and
    when a script connects with ``${BOOTSTRAP_SERVERS}`` alone while the connection is secured
    (``KAFKA_CONNECTION`` has more than the address): its tables would try without the login.
    """
    if ("${BOOTSTRAP_SERVERS}" in text and "${KAFKA_CONNECTION}" not in text
            and "security.protocol" in values.get("KAFKA_CONNECTION", "")):
        raise ValueError(f"{source}: uses ${{BOOTSTRAP_SERVERS}} without ${{KAFKA_CONNECTION}}, but the Kafka "
                         f"connection is secured (kafka.security_protocol); put ${{KAFKA_CONNECTION}} in each "
                         f"Kafka table's WITH clause instead of 'properties.bootstrap.servers'")
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


def rendered_path(options: RunSqlOptions, settings: VigilSettings) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", options.scored_topic)
    return settings.home / "sql" / f"{options.script.stem}-{safe}.rendered.sql"


def render_script(options: RunSqlOptions, settings: VigilSettings, schema: dict[str, Any],
                  manifest: dict[str, Any]) -> Path:
    """Write the rendered script (owner-readable only)."""
    if not options.script.is_file():
        raise ValueError(f"no SQL script at {options.script}")
    text = render(options.script.read_text(), placeholders(options, settings, schema, manifest), str(options.script))
    path = rendered_path(options, settings)
    write_secret_file(path, text)
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


def submit_script(options: RunSqlOptions, settings: VigilSettings) -> str:
    """Check inputs, render, create the output topic and submit; returns the job id."""
    cluster = LocalFlinkCluster(settings)
    cluster.require()  # fail before any Kafka work when there is nowhere to run
    check_broker(settings.bootstrap_servers)
    schema = schema_store.require(settings.bootstrap_servers, options.telemetry_topic)
    store_s3 = settings.s3 if settings.s3_for(settings.model_store) else None
    registry = ModelRegistry(settings.model_store, store_s3)
    manifest = registry.manifest(registry.resolve(options.model_ref))
    rendered = render_script(options, settings, schema, manifest)
    create_topic(settings.bootstrap_servers, options.scored_topic, options.scored_partitions)
    return submit(cluster, rendered)


def run(settings: VigilSettings, options: RunSqlOptions) -> int:
    started = time.monotonic()
    job_id = submit_script(options, settings)
    cluster = LocalFlinkCluster(settings)
    print(f"submitted job {job_id}: {options.script.name} {options.telemetry_topic} -> "
          f"{options.scored_topic} on {cluster.rest_url}", flush=True)
    if options.wait:
        state = cluster.wait_for_job(job_id, options.timeout)
        print(f"job {job_id} {state} after {time.monotonic() - started:.1f}s", flush=True)
        if state != "FINISHED":
            failure = cluster.job_exception(job_id)
            print(f"error: job {job_id} ended {state}" + (f":\n{failure}" if failure else ""), file=sys.stderr)
            return 1
    return 0


COMMAND = command("run-sql", __doc__, run, options=RunSqlOptions, settings_flags=("kafka.bootstrap_servers",
                                                                                  "model.store"),
                  expected_errors=(ConnectorError, ModelStoreError, FlinkClusterError, ValueError),
                  prog="python -m jobs.run_sql")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
