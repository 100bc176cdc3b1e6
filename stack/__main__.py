"""The local stack: install, start, stop and inspect the services Vigil runs on one machine.

    vigil stack setup            # resolve jars with Maven, build the Flink home, make the secrets and certificates
    vigil stack up [kafka s3 mosquitto]
    vigil stack status
    vigil stack down [--purge]   # --purge also deletes all data under VIGIL_HOME
    vigil stack env              # shell exports for flink / sql-client.sh
    vigil stack cluster up|down|status|jobs   # the local Flink standalone cluster
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import shlex
import shutil
import subprocess
import sys

from stack import certs, flink_home
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster
from stack.services import SERVICES, ServiceError
from vigil.commands import Options, command, group, option
from vigil.settings import KAFKA_CREDENTIALS_FILE, PROJECT_ROOT, S3_CREDENTIALS_FILE, VigilSettings, write_secret_file


def resolve_jars(settings: VigilSettings) -> None:
    """Download the Java parts from Maven Central into <home>/downloads (idempotent)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is not on PATH; it resolves the Flink, Kafka and s3proxy jars")
    cmd = [mvn, "-B", "-q", "-f", str(PROJECT_ROOT / "stack" / "maven" / "pom.xml"),
           f"-Dvigil.downloads={settings.downloads}", "generate-resources"]
    print(f"resolving jars from Maven Central into {settings.downloads} ...", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise ServiceError("Maven could not resolve the stack's jars (see the output above)")


def make_secrets(settings: VigilSettings) -> None:
    """The per-install secrets under <home>/secrets (0700): pseudonym key, S3 keys, the Kafka brokers'
    SASL user, the local CA and server certificate (stack/certs.py). Never printed."""
    folder = settings.secrets_dir
    key = folder / "pseudonym.key"
    if not key.exists():
        write_secret_file(key, secrets.token_hex(32) + "\n", private_dir=True)
        print(f"created the entity-id pseudonymisation secret {key} (keep it; it is not printed)")
    s3 = folder / S3_CREDENTIALS_FILE
    if not s3.exists():
        write_secret_file(s3, json.dumps({"access_key": "vigil-" + secrets.token_hex(6),
                                          "secret_key": secrets.token_urlsafe(30)}) + "\n", private_dir=True)
        print(f"created S3 credentials for the local s3proxy in {s3} (not printed)")
    kafka = folder / KAFKA_CREDENTIALS_FILE
    if not kafka.exists():
        write_secret_file(kafka, json.dumps({"username": "vigil", "password": secrets.token_urlsafe(30)}) + "\n",
                          private_dir=True)
        print(f"created the local Kafka brokers' SASL/SCRAM user in {kafka} (used with "
              f"VIGIL_KAFKA_SECURITY_PROTOCOL=SASL_SSL; not printed)")
    had_ca = (certs.folder(settings) / certs.CA_FILE).exists()
    tls = certs.ensure(settings)
    if not had_ca:
        print(f"created a local CA and a server certificate for {settings.host} in {tls.folder} (Kafka SASL_SSL, "
              f"Flink REST over https)")


def setup(settings: VigilSettings, _options: None) -> int:
    resolve_jars(settings)
    make_secrets(settings)
    home = flink_home.build(VigilSettings.load())  # the new S3 keys go into the rendered config
    print(f"Flink home ready at {home}")
    return 0


class UpOptions(Options):
    services: list[str] = option(["kafka", "s3"], f"services to start: any of {', '.join(SERVICES)}",
                                 argument=True, many=True, metavar="[SERVICE]...")
    timeout: float | None = option(None, "seconds to wait for each service (default: each service's own)")


def up(settings: VigilSettings, options: UpOptions) -> int:
    unknown = [n for n in options.services if n not in SERVICES]
    if unknown:
        raise ServiceError(f"unknown service(s) {unknown}; choose from {list(SERVICES)}")
    for name in options.services:
        service = SERVICES[name](settings)
        if service.probe():  # a healthy one is reused (start() would say so after the fact)
            print(f"{name}: already running, {service.address}", flush=True)
            continue
        print(f"{name}: starting ...", flush=True)
        outcome = service.start(options.timeout)
        print(f"{name}: {outcome}, {service.address}", flush=True)
    return 0


class DownOptions(Options):
    purge: bool = option(False, "also delete all service data under VIGIL_HOME (downloads and the Flink home stay)")


def down(settings: VigilSettings, options: DownOptions) -> int:
    pid_file = settings.home / "demo" / "dashboard.pid"  # the demo's dashboard (jobs/run_demo.py)
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            print("dashboard: stopped")
        except (OSError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)
    if LocalFlinkCluster(settings).stop():
        print("flink cluster: stopped")
    for name, cls in SERVICES.items():
        stopped = cls(settings).stop()
        print(f"{name}: {'stopped' if stopped else 'not running'}")
    if options.purge and settings.home.exists():
        for name in [*SERVICES, "checkpoints", "savepoints", "flink-tmp", "tier", "models"]:
            shutil.rmtree(settings.home / name, ignore_errors=True)
        print(f"purged service data under {settings.home} (downloads, secrets and Flink home kept)")
    return 0


def status(settings: VigilSettings, _options: None) -> int:
    for name, cls in SERVICES.items():
        print(f"{name:10s} {cls(settings).status()}")
    print(f"{'flink':10s} {LocalFlinkCluster(settings).status()}")
    return 0


def env(settings: VigilSettings, _options: None) -> int:
    for key, value in flink_home.environment(settings).items():
        print(f"export {key}={shlex.quote(value)}")
    print(f"export PATH={shlex.quote(str(settings.flink_home / 'bin'))}:\"$PATH\"")
    return 0


class ClusterUpOptions(Options):
    timeout: float | None = option(None, "seconds to wait for a TaskManager with free slots (default 120)")


def cluster_up(settings: VigilSettings, options: ClusterUpOptions) -> int:
    cluster = LocalFlinkCluster(settings)
    print("flink cluster: starting ...", flush=True)
    outcome = cluster.start(options.timeout)
    print(f"flink cluster: {outcome}, {cluster.status()}")
    return 0


def cluster_down(settings: VigilSettings, _options: None) -> int:
    print(f"flink cluster: {'stopped' if LocalFlinkCluster(settings).stop() else 'not running'}")
    return 0


def cluster_status(settings: VigilSettings, _options: None) -> int:
    print(f"flink cluster: {LocalFlinkCluster(settings).status()}")
    return 0


def cluster_jobs(settings: VigilSettings, _options: None) -> int:
    cluster = LocalFlinkCluster(settings)
    for job in cluster.jobs():
        print(f"{job['jid']}  {job['state']:10s}  {job['name']}")
        waiting = cluster.waiting_for_slots(job["jid"]) if job["state"] in ("CREATED", "RUNNING") else None
        if waiting:
            print(f"    {waiting}")
    return 0


def cluster_supervise(settings: VigilSettings, _options: None) -> int:
    LocalFlinkCluster(settings).supervise(log=lambda line: print(line, flush=True))
    return 0


class StopJobOptions(Options):
    job_id: str = option(..., "the job to stop", argument=True, metavar="JOB_ID")
    savepoint_dir: str | None = option(None, "where the savepoint goes", show_default="<home>/savepoints")


def cluster_stop_job(settings: VigilSettings, options: StopJobOptions) -> int:
    path = LocalFlinkCluster(settings).stop_with_savepoint(options.job_id, options.savepoint_dir)
    print(f"job {options.job_id} stopped; savepoint: {path}")
    print(f"resume it with the same flags plus --from-savepoint {path}")
    return 0


class UpgradeOptions(Options):
    job_id: str = option(..., "the running job to replace", argument=True, metavar="JOB_ID")
    job: str = option(..., "the job file to submit in its place (e.g. jobs/score_events.py)")
    args: list[str] = option([], "the job's flags, after --", argument=True, many=True, metavar="-- ARGS",
                             show_default=False)
    savepoint_dir: str | None = option(None, "where the savepoint goes", show_default="<home>/savepoints")


def cluster_upgrade(settings: VigilSettings, options: UpgradeOptions) -> int:
    """Stop with a savepoint, then submit the (new) job file resuming from it: no duplicates, no gaps."""
    from pathlib import Path

    from stack.flink_cluster import flink_run

    cluster = LocalFlinkCluster(settings)
    path = cluster.stop_with_savepoint(options.job_id, options.savepoint_dir)
    print(f"job {options.job_id} stopped; savepoint: {path}", flush=True)
    new_id = flink_run(settings, Path(options.job), [*options.args, "--from-savepoint", path], detached=True)
    print(f"submitted job {new_id}, resuming from {path}")
    return 0


_ERRORS = (ServiceError, FlinkClusterError, flink_home.FlinkHomeError)
CLUSTER = group("cluster", "The local Flink standalone cluster (one JobManager, one TaskManager).", {
    "up": command("up", "Start the cluster, or reuse a healthy one.", cluster_up, options=ClusterUpOptions,
                  expected_errors=_ERRORS),
    "down": command("down", "Stop the cluster.", cluster_down, expected_errors=_ERRORS),
    "status": command("status", "Show whether the cluster answers, its TaskManagers and slots.", cluster_status,
                      expected_errors=_ERRORS),
    "jobs": command("jobs", "List the cluster's jobs (and why one waits, when it waits for slots).", cluster_jobs,
                    expected_errors=_ERRORS),
    "stop": command("stop", "Stop a job with a savepoint (its output committed); prints how to resume it.",
                    cluster_stop_job, options=StopJobOptions, expected_errors=_ERRORS),
    "upgrade": command("upgrade", "Replace a running job: stop it with a savepoint, submit the job file resuming "
                                  "from it (python -m stack cluster upgrade JOB_ID --job jobs/score_events.py -- "
                                  "--input telemetry ...).", cluster_upgrade, options=UpgradeOptions,
                       expected_errors=_ERRORS),
    "supervise": command("supervise", "Restart the TaskManager whenever it dies (cluster up starts this).",
                         cluster_supervise, expected_errors=_ERRORS),
})
STACK = group("stack", __doc__, {
    "setup": command("setup", "Resolve the jars with Maven, build the project-local Flink home, make the "
                              "per-install secrets (idempotent).", setup, expected_errors=_ERRORS),
    "up": command("up", "Start services (or reuse healthy running ones) and wait until they answer.", up,
                  options=UpOptions, expected_errors=_ERRORS),
    "down": command("down", "Stop every service and the local Flink cluster.", down, options=DownOptions,
                    expected_errors=_ERRORS),
    "status": command("status", "Show which services answer.", status, expected_errors=_ERRORS),
    "env": command("env", "Print shell exports that point flink and sql-client.sh at the project's Flink home.",
                   env, expected_errors=_ERRORS),
    "cluster": CLUSTER,
}, prog="python -m stack")


def main(argv: list[str] | None = None) -> int:
    return STACK.main(argv)


if __name__ == "__main__":
    sys.exit(main())
