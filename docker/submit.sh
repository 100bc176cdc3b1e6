#!/usr/bin/env bash
# One-shot submitter (compose service `submitter`): fleet data -> trained model -> scoring job(s).
#
#   1. python -m jobs.simulate_fleet   writes simulated telemetry to Kafka      (VIGIL_SIMULATE)
#   2. python -m jobs.train_autoencoder trains on it, publishes to the store    (VIGIL_TRAIN)
#   3. flink run --python <job>        for each job in VIGIL_SCORING_JOBS; this container exits
#                                      once the cluster runs each of them
#
# Everything is set by environment variables (defaults in brackets). The *_ARGS variables are
# split on whitespace and passed through; VIGIL_SCORE_ARGS replaces the default scoring flags
# entirely, since the scoring jobs' flags may still change.
#
#   VIGIL_BOOTSTRAP_SERVERS  [kafka:19092]          Kafka, as seen from inside the compose network
#   VIGIL_TOPIC              [telemetry]            raw telemetry topic
#   VIGIL_MODEL_STORE        [s3://vigil/models]    model store (training writes, scoring reads)
#   VIGIL_TIER               [s3a://vigil/tier]     cold tier the scoring job writes Parquet to
#   VIGIL_SIMULATE           [true]                 false: skip step 1
#   VIGIL_SIM_VEHICLES       [20]
#   VIGIL_SIM_EVENTS         [12000]
#   VIGIL_SIMULATE_ARGS      []                     extra flags for jobs.simulate_fleet
#   VIGIL_TRAIN              [true]                 false: skip step 2 (use the store's LATEST)
#   VIGIL_TRAIN_ARGS         []                     extra flags for jobs.train_autoencoder
#   VIGIL_SCORING_JOBS       [jobs/score_events.py] space-separated job files (relative to /opt/vigil),
#                                                   e.g. "jobs/score_events.py jobs/score_events_stream.py"
#   VIGIL_SCORE_ARGS         [--input $VIGIL_TOPIC --bootstrap-servers $VIGIL_BOOTSTRAP_SERVERS
#                             --model-store $VIGIL_MODEL_STORE --tier $VIGIL_TIER]
#   VIGIL_FLINK_RUN_ARGS     [--detached]           options for `flink run` (e.g. "--detached -p 2")
#   VIGIL_JOBMANAGER_URL     [http://jobmanager:8081]
#   VIGIL_WAIT_SLOTS_S       [300]                  wait this long for a TaskManager slot (0: don't)
#   VIGIL_SUBMIT_TIMEOUT_S   [600]                  per job: wait this long for it to be RUNNING
#   VIGIL_PSEUDONYM_SECRET   (required by jobs/score_events.py; compose passes a local dev default)
set -euo pipefail

cd /opt/vigil

: "${VIGIL_BOOTSTRAP_SERVERS:=kafka:19092}"
: "${VIGIL_TOPIC:=telemetry}"
: "${VIGIL_MODEL_STORE:=s3://vigil/models}"
: "${VIGIL_TIER:=s3a://vigil/tier}"
: "${VIGIL_SIMULATE:=true}"
: "${VIGIL_SIM_VEHICLES:=20}"
: "${VIGIL_SIM_EVENTS:=12000}"
: "${VIGIL_SIMULATE_ARGS:=}"
: "${VIGIL_TRAIN:=true}"
: "${VIGIL_TRAIN_ARGS:=}"
: "${VIGIL_SCORING_JOBS:=jobs/score_events.py}"
: "${VIGIL_SCORE_ARGS:=--input ${VIGIL_TOPIC} --bootstrap-servers ${VIGIL_BOOTSTRAP_SERVERS} --model-store ${VIGIL_MODEL_STORE} --tier ${VIGIL_TIER}}"
: "${VIGIL_FLINK_RUN_ARGS:=--detached}"
: "${VIGIL_JOBMANAGER_URL:=http://jobmanager:8081}"
: "${VIGIL_WAIT_SLOTS_S:=300}"
: "${VIGIL_SUBMIT_TIMEOUT_S:=600}"

log() { printf '[submit %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

read -r -a simulate_args <<< "$VIGIL_SIMULATE_ARGS"
read -r -a train_args <<< "$VIGIL_TRAIN_ARGS"
read -r -a score_args <<< "$VIGIL_SCORE_ARGS"
read -r -a run_args <<< "$VIGIL_FLINK_RUN_ARGS"
read -r -a scoring_jobs <<< "$VIGIL_SCORING_JOBS"

# Fail before any work if a job file is missing (a typo in VIGIL_SCORING_JOBS).
for job in "${scoring_jobs[@]}"; do
  if [[ ! -f "$job" ]]; then
    log "error: scoring job $job does not exist in the image (VIGIL_SCORING_JOBS=$VIGIL_SCORING_JOBS)"
    exit 2
  fi
done

if [[ "$VIGIL_SIMULATE" == "true" ]]; then
  log "simulating ${VIGIL_SIM_EVENTS} readings of ${VIGIL_SIM_VEHICLES} vehicles into ${VIGIL_TOPIC}"
  python -m jobs.simulate_fleet --bootstrap-servers "$VIGIL_BOOTSTRAP_SERVERS" --topic "$VIGIL_TOPIC" \
    --vehicles "$VIGIL_SIM_VEHICLES" --events "$VIGIL_SIM_EVENTS" "${simulate_args[@]}"
fi

if [[ "$VIGIL_TRAIN" == "true" ]]; then
  log "training the autoencoder on ${VIGIL_TOPIC}, publishing to ${VIGIL_MODEL_STORE}"
  python -m jobs.train_autoencoder --bootstrap-servers "$VIGIL_BOOTSTRAP_SERVERS" --topic "$VIGIL_TOPIC" \
    --model-store "$VIGIL_MODEL_STORE" "${train_args[@]}"
fi

# The JobManager is healthy before this container starts (depends_on); a job submitted before any
# TaskManager registered would only sit waiting for slots, so say so plainly instead.
if (( VIGIL_WAIT_SLOTS_S > 0 )); then
  deadline=$(( SECONDS + VIGIL_WAIT_SLOTS_S ))
  until slots=$(curl -fsS "${VIGIL_JOBMANAGER_URL}/overview" \
                | python -c 'import json, sys; print(json.load(sys.stdin)["slots-total"])') \
        && (( slots > 0 )); do
    if (( SECONDS >= deadline )); then
      log "error: no TaskManager slot at ${VIGIL_JOBMANAGER_URL} after ${VIGIL_WAIT_SLOTS_S}s;" \
          "start one with --profile cpu or --profile gpu"
      exit 3
    fi
    sleep 2
  done
  log "${slots} task slot(s) available"
fi

# `flink run` keeps the Python driver alive while a job it waits on runs (the scoring jobs call
# wait() on their result), so each client runs in the background: once the cluster lists a new
# RUNNING job, the client is stopped, which leaves the job running (detached, or attached with
# execution.shutdown-on-attached-exit false, Flink's default). A client that exits first must exit 0.
running_jobs() {
  curl -fsS "${VIGIL_JOBMANAGER_URL}/jobs/overview" | python -c '
import json, sys
print(" ".join(j["jid"] for j in json.load(sys.stdin)["jobs"] if j["state"] == "RUNNING"))'
}

for job in "${scoring_jobs[@]}"; do
  before=" $(running_jobs || true) "
  log "submitting ${job}: flink run ${run_args[*]} --python ${job} ${score_args[*]}"
  flink run "${run_args[@]}" --python "/opt/vigil/${job}" "${score_args[@]}" &
  client=$!
  deadline=$(( SECONDS + VIGIL_SUBMIT_TIMEOUT_S ))
  while :; do
    if ! kill -0 "$client" 2>/dev/null; then
      if wait "$client"; then
        log "${job}: client finished"
        break
      else
        rc=$?
        log "error: ${job}: flink run exited with ${rc}"
        exit "$rc"
      fi
    fi
    new=""
    for jid in $(running_jobs || true); do
      [[ "$before" == *" $jid "* ]] || new="$jid"
    done
    if [[ -n "$new" ]]; then
      log "${job}: job ${new} is RUNNING; detaching the client"
      kill "$client" 2>/dev/null || true
      wait "$client" 2>/dev/null || true
      break
    fi
    if (( SECONDS >= deadline )); then
      log "error: ${job}: no new RUNNING job after ${VIGIL_SUBMIT_TIMEOUT_S}s"
      kill "$client" 2>/dev/null || true
      exit 4
    fi
    sleep 2
  done
done

log "done; jobs: ${VIGIL_JOBMANAGER_URL}/#/job/running"
