-- Score every telemetry event with the autoencoder, in Flink SQL.
--
-- Run it with `python -m jobs.run_sql jobs/sql/score_events.sql --telemetry-topic T --scored-topic S
-- [--bounded]`, which fills in the ${NAME} placeholders and submits the rendered script with
-- `sql-client.sh -f` to the local standalone cluster (`python -m stack cluster up`). No host, port,
-- path or column list is written here; they are generated from the topic's schema, the model's
-- manifest and the record contract (connectors/records.py):
--
--   TELEMETRY_COLUMNS   the source columns, from the topic's registered Avro schema (same order and
--                       NOT NULL as the writer's schema: schemaless Avro carries no field names)
--   SCORED_COLUMNS      the scored record's columns, exactly as the contract defines them
--   SCORED_SELECT       the scored record's values: PSEUDONYM(<entity>) for the entity id, the
--                       schema's derived features, ANOMALY's score/flag/version, the source offsets
--   SCORED_KEY          the contract's Kafka key column (the entity pseudonym)
--   FEATURE_COLUMNS     ANOMALY's arguments: the model's features, in its manifest's order; for a
--                       model with a window also each entity's previous readings and their times
--   SCORING_INPUT       what ANOMALY reads: the telemetry table, or for a model with a window the
--                       table with LAG(...) OVER each entity's readings in arrival order
--   PROC_COLUMN         the processing-time column that OVER window is ordered by (window only)
--   JOB_PARAMETERS      vigil.model.uri / .version / .refresh-seconds and the pseudonym secret's
--                       file (a path; the workers read the secret themselves) in Flink's map syntax
--   SCAN_BOUNDED_MODE   latest-offset (--bounded) or unbounded
--   KAFKA_CONNECTION    the Kafka tables' connection options: 'properties.bootstrap.servers' and,
--                       with kafka.security_protocol = SASL_SSL, the SASL/SCRAM-over-TLS options
--                       (connectors.flink_kafka.table_options; the password stays in a 0600 file)
--   BOOTSTRAP_SERVERS, TELEMETRY_TOPIC, SCORED_TOPIC, GROUP_ID, TRANSACTIONAL_ID_PREFIX,
--   PARALLELISM, PYTHON_EXECUTABLE

SET 'pipeline.name' = 'vigil-score-events-sql:${TELEMETRY_TOPIC}';
SET 'pipeline.global-job-parameters' = '${JOB_PARAMETERS}';
-- The Python workers on the TaskManager and the client that plans the job must both use the
-- project's interpreter (it has the project's packages installed).
SET 'python.executable' = '${PYTHON_EXECUTABLE}';
SET 'python.client.executable' = '${PYTHON_EXECUTABLE}';
SET 'parallelism.default' = '${PARALLELISM}';
-- Submit the INSERT and return: the client prints the job id; the job runs on in the cluster.
SET 'table.dml-sync' = 'false';

CREATE TEMPORARY TABLE telemetry (
  ${TELEMETRY_COLUMNS},
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  kafka_timestamp TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL${PROC_COLUMN}
) WITH (
  'connector' = 'kafka',
  'topic' = '${TELEMETRY_TOPIC}',
  ${KAFKA_CONNECTION},
  'properties.group.id' = '${GROUP_ID}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = '${SCAN_BOUNDED_MODE}',
  'format' = 'avro'
);

-- ROW<score DOUBLE, is_anomaly BOOLEAN, model_version STRING, partial STRING>; a higher score is
-- more anomalous.
CREATE TEMPORARY SYSTEM FUNCTION ANOMALY AS 'udfs.anomaly_score.anomaly' LANGUAGE PYTHON;
-- The keyed pseudonym of an entity id: raw ids never leave the job.
CREATE TEMPORARY SYSTEM FUNCTION PSEUDONYM AS 'udfs.preprocess.pseudonymise' LANGUAGE PYTHON;

-- Every input record once, with its score: the source partition/offset identify it exactly.
CREATE TEMPORARY TABLE scored (
  ${SCORED_COLUMNS}
) WITH (
  'connector' = 'kafka',
  'topic' = '${SCORED_TOPIC}',
  ${KAFKA_CONNECTION},
  'key.format' = 'raw',
  'key.fields' = '${SCORED_KEY}',
  'value.format' = 'json',
  'value.fields-include' = 'ALL',
  'value.json.timestamp-format.standard' = 'ISO-8601',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '${TRANSACTIONAL_ID_PREFIX}',
  'properties.transaction.timeout.ms' = '900000'
);

INSERT INTO scored
SELECT ${SCORED_SELECT}
FROM (SELECT *, ANOMALY(${FEATURE_COLUMNS}) AS s FROM ${SCORING_INPUT});
