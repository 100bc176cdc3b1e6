-- Score every record of a topic in Flink SQL, with the Table job's guarantees.
--
-- Run it with `vigil score sql --input T [--model name@alias] [--bounded] [--wait]` (that is
-- `python -m jobs.run_sql jobs/sql/score_events.sql --input T ...`) on the local standalone cluster
-- (`python -m stack cluster up`). The runner does the Table job's client-side checks (the topic
-- has a schema, the model exists and reads the topic's columns, the suite loads, the secret is
-- readable), creates the output topics, and starts the SQL client with a session whose database
-- `job` holds, generated from the topic's schema, the model's manifest and the record contract
-- (connectors/records.py; jobs/sql/catalog.py writes them):
--
--   job.source             the input topic's raw records (bytes, key, partition, offset, timestamp)
--   job.scored_rows        every record that decoded, passed the expectation suite and got a score,
--                          as the scored record: pseudonymised entity id, the schema's derived
--                          features, score, is_anomaly, model_version, source partition and offset
--   job.alert_rows         one alert per anomalous reading, with the contract's alert columns (the
--                          Table job groups anomalies into episodes with hysteresis; SQL does not)
--   job.dead_letter_rows   every other record, with its reason and its original bytes sealed
--   job.tier_rows          the scored records with their dt/hr partition
--   job.scored, job.alerts, job.dlq   exactly-once Kafka sinks of the contract's columns (JSON)
--   job.tier               the Parquet tier (a blackhole with --tier none)
--
-- The views are optimised once for all four INSERTs (the decoder, the suite and ANOMALY run once
-- per record), and SEAL runs on dead letters only. ${NAME} placeholders are filled by the runner:
-- INPUT_TOPIC, SCORED_TOPIC, ALERTS_TOPIC, DLQ_TOPIC, MODEL, BOOTSTRAP_SERVERS, KAFKA_CONNECTION (the
-- connection options of a Kafka table a script declares itself) and any --define NAME=VALUE.

SET 'pipeline.name' = 'vigil-score-events-sql:${INPUT_TOPIC}';
-- Submit and return: the client prints the job id; the job runs on in the cluster.
SET 'table.dml-sync' = 'false';

EXECUTE STATEMENT SET
BEGIN
INSERT INTO `job`.`scored` SELECT * FROM `job`.`scored_rows`;
INSERT INTO `job`.`alerts` SELECT * FROM `job`.`alert_rows`;
INSERT INTO `job`.`dlq` SELECT * FROM `job`.`dead_letter_rows`;
INSERT INTO `job`.`tier` SELECT * FROM `job`.`tier_rows`;
END;
