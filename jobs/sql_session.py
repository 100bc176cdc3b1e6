"""Open the Flink SQL client with every registered topic as a table and every model as a function.

    vigil sql                                  # interactive, on the local standalone cluster
    vigil sql --file queries.sql [--wait]      # run a script; errors in one line, exit code 1
    vigil sql --topic plant-a --model plant-a@challenger --bounded

Nothing to declare by hand (docs/sql.md is the cookbook). In catalog ``vigil``:

* ``<topic>``: every topic of the schema store, decoded and pseudonymised as the scoring jobs
  decode it (Avro, Confluent wire format or JSON), with ``error`` (why a record is unusable) and
  ``kafka_partition``, ``kafka_offset``, ``kafka_timestamp``; ``<topic>.scored``, ``.alerts``,
  ``.dlq`` (and ``.tier`` with a tier): the scoring jobs' outputs, readable and writable;
* ``ANOMALY_<MODEL>[_<ALIAS>|_V<N>](<features>)``: one function per model reference of the
  registry (``--model`` to choose), typed with the model's features (``DESCRIBE FUNCTION EXTENDED``);
  ``ANOMALY('name@alias', <features>)``: the same models behind one function, the model named by
  its first argument (checked at planning time against that model's features);
  ``SELECT * FROM model_functions`` lists them; ``PSEUDONYM(id)`` pseudonymises a raw id.
* ``<topic>.scored_by.<model@alias>``: the topic's usable readings scored by that model, no call
  to write; ``<topic>.window<W>``: each reading with its entity's previous ones, the arguments of
  a model that reads a window of W readings.

``--bounded``: every topic table ends at the offsets that were latest when the session started
(queries finish). A query that fails is retried twice, then reported (the Python error when a
Python worker raised it). The cluster must be running (``python -m stack cluster up``).
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from connectors.errors import ConnectorError
from connectors.kafka_io import check_broker, list_topics
from connectors.model_registry import ModelRegistry
from connectors.model_store import ModelStoreError
from jobs.core.scoring import load_suite
from jobs.sql import catalog, client
from jobs.sql.functions import SqlFunctionError
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster
from udfs.anomaly_score import REFRESH_SECONDS
from vigil.commands import Options, command, option
from vigil.settings import SettingsError, VigilSettings


class SqlSessionOptions(Options):
    """What the session shows and what it runs."""

    file: Path | None = option(None, "run this SQL script in the session instead of the interactive client")
    topics: list[str] = option([], "only this topic (repeatable)", flag="--topic", many=True, metavar="TOPIC",
                               show_default="every topic of the schema store")
    models: list[str] = option([], "a function for this model reference: name@alias, name@N (repeatable)",
                               flag="--model", many=True, metavar="REF",
                               show_default="every alias of every model in the registry")
    bounded: bool = option(False, "topic tables end at the offsets latest when the session starts")
    model_refresh_seconds: float = option(REFRESH_SECONDS, "how often workers look where a model's alias points "
                                                           "(0 = never)", ge=0)
    wait: bool = option(False, "with --file: wait for the jobs its INSERTs submit and report how they end")
    timeout: float = option(600.0, "seconds a --file script (and --wait) may take", gt=0)
    init_only: bool = option(False, "write the session's files, print the sql-client command, start nothing")


def session(settings: VigilSettings, options: SqlSessionOptions, session_id: str) -> catalog.Session:
    """The session of the registered topics and models."""
    check_broker(settings.bootstrap_servers)
    settings.pseudonym.check_readable()
    topics = catalog.topics_named(catalog.registered_topics(settings.bootstrap_servers), options.topics)
    store_s3 = settings.s3 if settings.s3_for(settings.model_store) else None
    models = catalog.model_functions(ModelRegistry(settings.model_store, store_s3), options.models)
    s = client.session_settings(settings, session_id, bounded=options.bounded,
                                model_refresh_seconds=options.model_refresh_seconds)
    return catalog.build_session(s, topics, models, {t: load_suite(None, schema) for t, schema in topics.items()},
                                 existing=set(list_topics(settings.bootstrap_servers)))


def run(settings: VigilSettings, options: SqlSessionOptions) -> int:
    if options.file is not None and not options.file.is_file():
        raise ValueError(f"no SQL script at {options.file}")
    cluster = LocalFlinkCluster(settings)
    if not options.init_only:
        cluster.require()
    session_id = client.new_session_id()
    made = session(settings, options, session_id)
    extra = client.SCRIPT_SETTINGS if options.file else []
    files = client.write_session(made, settings, session_id, extra=extra,
                                 header=f"-- vigil sql session {session_id} (generated; do not edit)\n\n")
    print(f"vigil sql: {len(made.topics)} topic(s) as tables, {len(made.tables)} tables in all (SHOW TABLES), "
          f"{len(made.models)} model function(s) (SELECT * FROM model_functions) on {cluster.rest_url}",
          file=sys.stderr, flush=True)
    if options.init_only:
        env = cluster.environment()
        print(" ".join(shlex.quote(p) for p in [
            "env", *(f"{k}={env[k]}" for k in ("FLINK_HOME", "FLINK_CONF_DIR", "HADOOP_CLASSPATH")),
            *client.client_command(cluster, files)]))
        return 0
    if options.file is None:
        return client.interactive(cluster, files)
    started = time.monotonic()
    result = client.run_script(cluster, files, options.file, timeout=options.timeout)
    print(result.output, flush=True)
    if result.error:
        raise client.SqlClientError(f"{options.file.name}: {result.error}")
    for job_id in result.job_ids:
        print(f"submitted job {job_id} ({options.file.name}) on {cluster.rest_url}", flush=True)
    return client.report_jobs(cluster, result.job_ids, options.timeout, started) if options.wait else 0

COMMAND = command("sql", __doc__, run, options=SqlSessionOptions,
                  settings_flags=("kafka.bootstrap_servers", "model.store", "tier", "pseudonym.secret_file"),
                  expected_errors=(ConnectorError, ModelStoreError, FlinkClusterError, SqlFunctionError,
                                   client.SqlClientError, SettingsError, ValueError),
                  prog="vigil sql")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
