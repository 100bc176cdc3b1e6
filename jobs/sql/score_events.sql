-- Score every telemetry event with the autoencoder, in Flink SQL.
--
-- Run it with `python -m jobs.run_sql jobs/sql/score_events.sql --telemetry-topic T --scored-topic S
-- --model-store URI [--bounded]`, which fills in the ${NAME} placeholders and submits the rendered
-- script with `sql-client.sh -f` to the local standalone cluster (`python -m stack cluster up`).
-- No host, port, path or column list is written here:
--
--   TELEMETRY_COLUMNS       the source columns, generated from the topic's registered Avro schema
--                           (same order and NOT NULL as the writer's schema: schemaless Avro
--                           carries no field names)
--   TELEMETRY_COLUMN_NAMES  the same columns as a select list
--   FEATURE_COLUMNS         ANOMALY's arguments: the model's features, in its manifest's order
--   ENTITY_COLUMN           the schema's id column (vigil.entity), the scored records' Kafka key
--   JOB_PARAMETERS          vigil.model.uri / vigil.model.version / ... in Flink's map syntax;
--                           ANOMALY reads them in the Python workers (udfs/anomaly_score.py)
--   SCAN_BOUNDED_MODE       latest-offset (--bounded: stop at the offsets latest at submission)
--                           or unbounded
--   BOOTSTRAP_SERVERS, TELEMETRY_TOPIC, SCORED_TOPIC, GROUP_ID, PARALLELISM, PYTHON_EXECUTABLE

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
  kafka_offset BIGINT METADATA FROM 'offset' VIRTUAL
) WITH (
  'connector' = 'kafka',
  'topic' = '${TELEMETRY_TOPIC}',
  'properties.bootstrap.servers' = '${BOOTSTRAP_SERVERS}',
  'properties.group.id' = '${GROUP_ID}',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = '${SCAN_BOUNDED_MODE}',
  'format' = 'avro'
);

-- ROW<score DOUBLE, is_anomaly BOOLEAN, model_version STRING>; a higher score is more anomalous.
CREATE TEMPORARY SYSTEM FUNCTION ANOMALY AS 'udfs.anomaly_score.anomaly' LANGUAGE PYTHON;

-- Every input record once, with its score: the source partition/offset identify it exactly.
CREATE TEMPORARY TABLE scored (
  ${TELEMETRY_COLUMNS},
  source_partition INT,
  source_offset BIGINT,
  score DOUBLE,
  is_anomaly BOOLEAN,
  model_version STRING
) WITH (
  'connector' = 'kafka',
  'topic' = '${SCORED_TOPIC}',
  'properties.bootstrap.servers' = '${BOOTSTRAP_SERVERS}',
  'key.format' = 'raw',
  'key.fields' = '${ENTITY_COLUMN}',
  'value.format' = 'json',
  'value.fields-include' = 'ALL',
  'value.json.timestamp-format.standard' = 'ISO-8601',
  'sink.delivery-guarantee' = 'at-least-once'
);

INSERT INTO scored
SELECT ${TELEMETRY_COLUMN_NAMES},
       kafka_partition, kafka_offset,
       s.score, s.is_anomaly, s.model_version
FROM (SELECT *, ANOMALY(${FEATURE_COLUMNS}) AS s FROM telemetry);
