"""Score a topic in Flink SQL on the local standalone cluster, with the Table job's guarantees.

    vigil score sql --input telemetry [--model telemetry@champion] [--bounded] [--wait]
    vigil score sql my_scoring.sql --input telemetry --define THRESHOLD=0.9

The script (default: jobs/sql/score_events.sql) is a plain ``sql-client.sh -f`` file with
``${NAME}`` placeholders (``INPUT_TOPIC``, ``SCORED_TOPIC``, ``ALERTS_TOPIC``, ``DLQ_TOPIC``,
``MODEL``, ``BOOTSTRAP_SERVERS``, ``KAFKA_CONNECTION`` for a Kafka table of its own, and each
``--define NAME=VALUE``). It runs after an init script that declares the
session's catalog (every topic as a table, jobs/sql/catalog.py) and database ``job``: the input
topic's source, views that produce each output of the record contract exactly as the Table job
(decode + pseudonymise, the expectation suite, ANOMALY, routing to scored / alerts / dead letters)
and their exactly-once sinks. The options are the Table job's (``vigil score table --help``):
the same checks run before anything is submitted, and the outputs default to the same topics.

The command prints the job id. ``--wait`` waits for the job (use with ``--bounded``); a job that
fails is reported in one line, with the Python error when a Python worker raised it. A statement
the planner refuses is reported in one line and submits nothing. The cluster must be running
(``python -m stack cluster up``).
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from connectors.errors import ConnectorError
from connectors.model_store import ModelStoreError
from jobs.core import scoring
from jobs.sql import catalog, client
from jobs.sql.functions import SqlFunctionError
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster
from vigil.commands import command, option
from vigil.settings import PROJECT_ROOT, SettingsError, VigilSettings, write_secret_file

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
DEFAULT_SCRIPT = PROJECT_ROOT / "jobs" / "sql" / "score_events.sql"
JOB = "score-events-sql"


def _definition(text: str) -> dict[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not PLACEHOLDER.fullmatch(f"${{{name}}}"):
        raise ValueError(f"--define wants NAME=VALUE with an upper-case NAME, got {text!r}")
    return {name: value}


class RunSqlOptions(scoring.ScoreOptions):
    """The scoring job's options, plus the script and waiting for the job."""

    script: Path = option(DEFAULT_SCRIPT, "a .sql file with ${NAME} placeholders", argument=True, metavar="[SCRIPT]",
                          show_default="jobs/sql/score_events.sql")
    wait: bool = option(False, "wait for the job to end (use with --bounded) and report how it ended")
    timeout: float = option(600.0, "seconds --wait waits", gt=0)
    define: dict[str, str] = option({}, "value for a further placeholder of the script, NAME=VALUE (repeatable)",
                                    parse=_definition, many=True, metavar="NAME=VALUE", show_default=False)


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
    or value holds ':' or ',' (model URIs such as file:// and s3:// do): for a hand-written session
    that registers ``udfs.anomaly_score.anomaly`` itself and configures it by job parameters."""
    entries = (_flink_escape(f"{_flink_escape(k, ':')}:{_flink_escape(str(v), ':')}", ",")
               for k, v in params.items())
    return ",".join(entries)


def placeholders(options: RunSqlOptions, plan: scoring.ScoringPlan) -> dict[str, str]:
    """The values a script may use: the plan's topics and model, the broker, and every --define
    (SQL-quoted); ``KAFKA_CONNECTION``: the connection options of a Kafka table the script declares
    itself, as SQL (address and, with SASL_SSL, the login by reference: no password in the script)."""
    values = {"INPUT_TOPIC": plan.input_topic, "SCORED_TOPIC": plan.topics["scored"],
              "ALERTS_TOPIC": plan.topics["alerts"], "DLQ_TOPIC": plan.topics["dlq"], "MODEL": plan.model_ref,
              "BOOTSTRAP_SERVERS": plan.bootstrap_servers, **options.define}
    out = {k: sql_literal(v) for k, v in values.items()}
    out["KAFKA_CONNECTION"] = kafka_connection(plan.bootstrap_servers)
    return out


def kafka_connection(bootstrap: str) -> str:
    """A Kafka table's connection options as SQL, from connectors.flink_kafka.table_options (the same
    options as the session's tables). Raises SettingsError naming a missing login or CA file."""
    from connectors import flink_kafka

    return ",\n  ".join(f"{catalog.literal(key)} = {catalog.literal(value)}"
                         for key, value in flink_kafka.table_options(bootstrap).items())


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


def job_settings(plan: scoring.ScoringPlan) -> list[str]:
    """SETs of the job itself: parallelism, checkpointing, a savepoint to resume from."""
    out = [f"SET 'parallelism.default' = '{plan.parallelism}'"]
    if plan.checkpoint_interval:
        out.append(f"SET 'execution.checkpointing.interval' = {catalog.literal(plan.checkpoint_interval)}")
    if plan.savepoint:
        out.append(f"SET 'execution.state-recovery.path' = {catalog.literal(plan.savepoint)}")
    return out


def scoring_session(settings: VigilSettings, plan: scoring.ScoringPlan, session_id: str) -> catalog.Session:
    """The input topic's catalog objects plus database ``job`` (jobs/sql/catalog.job_objects)."""
    # The cluster's restart strategy (flink-conf/: bounded) stands for a long-running job.
    s = client.session_settings(settings, session_id, restart_attempts=None,
                                model_refresh_seconds=plan.model_refresh_seconds,
                                validation_engine=plan.validation_engine)
    session = catalog.build_session(s, {plan.input_topic: plan.schema}, [], {plan.input_topic: plan.suite})
    catalog.job_objects(session, s, plan)
    return session


def prepare(settings: VigilSettings, options: RunSqlOptions) -> tuple[scoring.ScoringPlan, client.SessionFiles, Path]:
    """Check everything, create the output topics, write the session and the rendered script."""
    if not options.script.is_file():
        raise ValueError(f"no SQL script at {options.script}")
    plan = scoring.plan(settings, options, job=JOB)
    session_id = client.new_session_id()
    files = client.write_session(scoring_session(settings, plan, session_id), settings, session_id,
                                 header=f"-- vigil score sql: the session of {options.script.name} for "
                                        f"{plan.input_topic} (generated; do not edit)\n\n",
                                 extra=[*client.SCRIPT_SETTINGS, *job_settings(plan)])
    rendered = files.folder / f"{options.script.stem}.rendered.sql"
    write_secret_file(rendered, render(options.script.read_text(), placeholders(options, plan), str(options.script)))
    return plan, files, rendered


def run(settings: VigilSettings, options: RunSqlOptions) -> int:
    started = time.monotonic()
    cluster = LocalFlinkCluster(settings)
    cluster.require()  # fail before any Kafka work when there is nowhere to run
    plan, files, rendered = prepare(settings, options)
    result = client.run_script(cluster, files, rendered, timeout=options.timeout)
    if result.error:
        raise client.SqlClientError(f"{options.script.name}: {result.error}")
    if not result.job_ids:
        raise client.SqlClientError(f"{options.script.name} submitted no job (its statements ran in the client)")
    outputs = ", ".join([*plan.topics.values(), *([plan.tier] if plan.tier else [])])
    for job_id in result.job_ids:
        print(f"submitted job {job_id}: {plan.input_topic} -> {outputs} ({options.script.name}, model "
              f"{plan.model_ref}) on {cluster.rest_url}", flush=True)
    return client.report_jobs(cluster, result.job_ids, options.timeout, started) if options.wait else 0

COMMAND = command("run-sql", __doc__, run, options=RunSqlOptions, settings_flags=scoring.SCORE_SETTINGS_FLAGS,
                  expected_errors=(ConnectorError, ModelStoreError, FlinkClusterError, SqlFunctionError,
                                   client.SqlClientError, SettingsError, ValueError),
                  prog="python -m jobs.run_sql")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
