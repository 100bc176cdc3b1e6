#!/usr/bin/env bash
# Entry point of the vigil-flink image (docker/Dockerfile).
#
#   jobmanager     Flink JobManager in the foreground (web UI and REST on :8081, metrics :9249)
#   taskmanager    Flink TaskManager in the foreground (metrics :9249)
#   submit         the one-shot submitter: docker/submit.sh
#   render-config  print the rendered Flink config (secrets masked) and exit
#   anything else  run as a command, with the rendered config in place (e.g. `bash`, `flink list`)
#
# Every role first renders $FLINK_CONF_DIR/config.yaml from flink-conf/ (profile "cluster") plus
# the container's environment; see docker/render_flink_conf.py for the variables it reads.
set -euo pipefail

cd /opt/vigil
role="${1:-}"

if [[ "$role" == "render-config" ]]; then
  exec python docker/render_flink_conf.py --print
fi

python docker/render_flink_conf.py

case "$role" in
  jobmanager)
    shift
    exec "$FLINK_HOME/bin/jobmanager.sh" start-foreground "$@"
    ;;
  taskmanager)
    shift
    exec "$FLINK_HOME/bin/taskmanager.sh" start-foreground "$@"
    ;;
  submit)
    shift
    exec /opt/vigil/docker/submit.sh "$@"
    ;;
  "" | help | --help | -h)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    ;;
  *)
    exec "$@"
    ;;
esac
