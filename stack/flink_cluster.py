"""A local Flink standalone cluster (one JobManager, one or more TaskManagers) and job submission to it.

The cluster runs from the project-local Flink home (stack/flink_home.py) with its scripts
(``start-cluster.sh``, ``stop-cluster.sh``); jobs are submitted with ``flink run -py`` or
``sql-client.sh`` against its REST address. This is the "real deployment" path: the job's Python
code runs in a client process, the operators (Python UDF workers included) in the TaskManager.

Each cluster keeps its own folder ``<home>/flink-cluster/<rest port>/`` with:

* ``conf/``  its config.yaml, rendered from flink-conf/ (``flink_home.render_config``) plus the
  cluster's ports. It is separate from ``<home>/flink/conf`` so that a cluster on a non-default
  port (tests) never rewrites the configuration other processes read, and so that the clients
  (``flink run``, ``sql-client.sh``) read exactly the configuration the cluster was started with;
* ``log/``   the JobManager and TaskManager logs (their tails are in every start-up error);
* ``pid/``   the daemons' pid files, so ``stop()`` stops this cluster and no other.

``conf/workers`` has one line per TaskManager: the supervisor (``python -m stack cluster
supervise``) keeps that many running. With ``flink.rest_ssl`` the REST API answers over https
only, and every call of this module verifies it against the local CA (stack/certs.py).

``flink-python`` stays in ``opt/``: the TaskManager does not need it in ``lib/`` because every
client ships it with the job as a user jar (``flink run -py`` adds it to the program's jars;
in ``sql-client.sh`` registering a ``LANGUAGE PYTHON`` function adds it to the session's jars).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from stack import certs, flink_home
from stack.services import _alive, log_tail, port_open
from vigil.settings import VigilSettings, write_secret_file

TERMINAL_STATES = frozenset({"FINISHED", "FAILED", "CANCELED"})
_IDENT = "vigil"  # FLINK_IDENT_STRING: names the pid and log files
_JOB_ID = re.compile(r"(?:JobID|Job ID:?)\s*([0-9a-f]{32})")


class FlinkClusterError(RuntimeError):
    """The cluster could not be started, reached or stopped, or a job could not be submitted."""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class LocalFlinkCluster:
    """A standalone Flink cluster on this machine, at ``http(s)://<host>:<flink_rest_port>``.

    ``start()`` is idempotent (a healthy cluster is reused), ``stop()`` stops only the daemons
    this cluster's pid files name. All REST helpers raise FlinkClusterError when the cluster
    does not answer. ``taskmanagers``: how many TaskManagers it runs (default: as many as its
    ``conf/workers`` lists, else 1); ``config``: Flink options over the rendered project config
    (nested dicts, e.g. ``{"taskmanager": {"numberOfTaskSlots": 1}}``).
    """

    startup_timeout_s: float = 120.0

    def __init__(self, settings: VigilSettings, *, taskmanagers: int | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.dir = settings.home / "flink-cluster" / str(settings.flink.rest_port)
        self.conf_dir = self.dir / "conf"
        self.log_dir = self.dir / "log"
        self.pid_dir = self.dir / "pid"
        if taskmanagers is None:
            workers = self.conf_dir / "workers"
            listed = [w for w in workers.read_text().split() if w] if workers.exists() else []
            taskmanagers = max(1, len(listed))
        if taskmanagers < 1:
            raise ValueError(f"a cluster needs at least 1 TaskManager, got {taskmanagers}")
        self.taskmanagers = taskmanagers
        self.config_overrides = config or {}

    # --- addresses and environment -------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        scheme = "https" if self.settings.flink.rest_ssl else "http"
        return f"{scheme}://{self.settings.host}:{self.settings.flink.rest_port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """What the REST calls verify the cluster with over https: the local CA (None over http)."""
        if not self.settings.flink.rest_ssl:
            return None
        try:
            return ssl.create_default_context(cafile=str(certs.files(self.settings).ca))
        except certs.CertificateError as exc:
            raise FlinkClusterError(f"flink.rest_ssl is on but {exc}") from None

    @property
    def address(self) -> str:
        """What ``flink run -m`` / ``flink list -m`` want: ``host:port``, or ``https://host:port`` with
        ``flink.rest_ssl`` (the CLI takes an address without a scheme for http and talks plain HTTP to
        it, whatever the config's ``security.ssl.rest.enabled`` says)."""
        plain = f"{self.settings.host}:{self.settings.flink.rest_port}"
        return f"https://{plain}" if self.settings.flink.rest_ssl else plain

    def environment(self) -> dict[str, str]:
        """Environment for the cluster scripts and its clients (flink, sql-client.sh)."""
        env = dict(os.environ)
        # A PyFlink gateway port inherited from a `flink run` parent would make the Python
        # driver of a nested submission attach to the wrong JVM.
        env.pop("PYFLINK_GATEWAY_PORT", None)
        env.update(flink_home.environment(self.settings))
        env.update({
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
            "FLINK_IDENT_STRING": _IDENT,
        })
        return env

    def script(self, name: str) -> Path:
        """A script of the Flink home's bin/; FlinkClusterError when the home was never built."""
        path = self.settings.flink_home / "bin" / name
        if not path.exists():
            raise FlinkClusterError(f"{path} does not exist; build the Flink home with `python -m stack setup`")
        return path

    # --- REST ------------------------------------------------------------------------------------
    def _request(self, path: str, method: str = "GET", timeout: float = 5.0, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.rest_url + path, method=method, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context()) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise FlinkClusterError(f"{method} {self.rest_url}{path} answered {exc.code}: {detail}") from exc
        except OSError as exc:
            raise FlinkClusterError(f"no Flink cluster answers at {self.rest_url} ({exc}); start one with "
                                    f"`python -m stack cluster up`") from exc
        return json.loads(body) if body else None

    def overview(self) -> dict[str, Any] | None:
        """REST /overview (TaskManagers, slots, job counts, version), or None when nothing answers."""
        if not port_open(self.settings.host, self.settings.flink.rest_port):
            return None
        try:
            overview = self._request("/overview", timeout=3)
        except FlinkClusterError:
            return None
        return overview if isinstance(overview, dict) and "taskmanagers" in overview else None

    def healthy(self) -> bool:
        """True when the REST API answers and at least one TaskManager is registered."""
        overview = self.overview()
        return bool(overview and overview.get("taskmanagers", 0) >= 1)

    def require(self) -> dict[str, Any]:
        """The overview of the running cluster; FlinkClusterError saying how to start one otherwise."""
        overview = self.overview()
        if not overview or overview.get("taskmanagers", 0) < 1:
            state = "answers without a TaskManager" if overview else "is not running"
            raise FlinkClusterError(f"the Flink cluster at {self.rest_url} {state}; start it with "
                                    f"`python -m stack cluster up`")
        return overview

    def jobs(self) -> list[dict[str, Any]]:
        """REST /jobs/overview: one dict per job (jid, name, state, start-time, ...)."""
        return self._request("/jobs/overview")["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request(f"/jobs/{job_id}")

    def job_exception(self, job_id: str) -> str | None:
        """The latest failure of a job (exception and stack trace), or None when it has none."""
        try:
            info = self._request(f"/jobs/{job_id}/exceptions?maxExceptions=1")
        except FlinkClusterError:
            return None
        entries = (info.get("exceptionHistory") or {}).get("entries") or []
        if entries:
            return entries[0].get("stacktrace") or entries[0].get("exceptionName")
        return info.get("root-exception")

    def wait_for_job(self, job_id: str, timeout: float = 300.0, poll_s: float = 0.5) -> str:
        """Block until the job is FINISHED, FAILED or CANCELED; returns that state.

        A job that keeps restarting (the restart strategy retries for ever) never reaches a
        final state: on timeout FlinkClusterError carries its state and latest exception.
        """
        deadline = time.monotonic() + timeout
        state = "UNKNOWN"
        while time.monotonic() < deadline:
            state = self.job(job_id)["state"]
            if state in TERMINAL_STATES:
                return state
            time.sleep(poll_s)
        failure = self.job_exception(job_id)
        raise FlinkClusterError(f"job {job_id} is still {state} after {timeout:.0f}s"
                                + (f"; latest exception:\n{_tail(failure)}" if failure else ""))

    def cancel(self, job_id: str) -> None:
        """Ask the cluster to cancel a job (returns at once; use wait_for_job to see it CANCELED)."""
        self._request(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def job_restarts(self, job_id: str) -> int:
        """How often a job restarted (Flink's numRestarts metric)."""
        return int(self._request(f"/jobs/{job_id}/metrics?get=numRestarts")[0]["value"])

    def stop_with_savepoint(self, job_id: str, directory: str | None = None, timeout: float = 300.0) -> str:
        """Stop a job after a savepoint (its Kafka transactions committed); returns the savepoint's path.

        Resubmitting the job with ``--from-savepoint <path>`` goes on exactly where it stopped.
        """
        target = directory or (self.settings.home / "savepoints").as_uri()
        trigger = self._request(f"/jobs/{job_id}/stop", method="POST", body={"targetDirectory": target,
                                                                             "drain": False})["request-id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self._request(f"/jobs/{job_id}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation") or {}
                if "location" in operation:
                    return operation["location"]
                raise FlinkClusterError(f"stopping job {job_id} with a savepoint failed: "
                                        f"{_tail(str(operation.get('failure-cause', operation)))}")
            time.sleep(0.5)
        raise FlinkClusterError(f"the savepoint of job {job_id} did not complete within {timeout:.0f}s")

    def waiting_for_slots(self, job_id: str) -> str | None:
        """Why a job's tasks are not running, when they wait for slots the cluster does not have."""
        job = self.job(job_id)
        if job.get("state") not in ("CREATED", "RUNNING", "RESTARTING"):
            return None
        scheduled = sum(v.get("status", "") in ("SCHEDULED", "CREATED") for v in job.get("vertices", []))
        if not scheduled:
            return None
        overview = self.overview() or {}
        needed = max((v.get("parallelism", 1) for v in job.get("vertices", [])), default=1)
        if overview.get("slots-available", 0) >= needed:
            return None
        return (f"job {job_id} waits for task slots: it needs {needed}, the cluster at {self.rest_url} has "
                f"{overview.get('slots-available', 0)} free of {overview.get('slots-total', 0)} "
                f"({overview.get('taskmanagers', 0)} TaskManager(s)); start more TaskManagers or lower "
                f"the job's parallelism")

    # --- lifecycle -------------------------------------------------------------------------------
    def _pid_files(self) -> list[Path]:
        return sorted(self.pid_dir.glob(f"flink-{_IDENT}-*.pid"))

    def pids(self) -> list[int]:
        """Live daemon processes (JobManager, TaskManager) of this cluster."""
        out = []
        for path in self._pid_files():
            for line in path.read_text().split():
                if line.isdigit() and _alive(int(line)):
                    out.append(int(line))
        return out

    def logs(self, lines: int = 30) -> str:
        """Tails of the newest JobManager and TaskManager logs (and their .out files when not empty)."""
        parts = []
        for role in ("standalonesession", "taskexecutor"):
            for suffix in ("log", "out"):
                found = sorted(self.log_dir.glob(f"flink-*-{role}-*.{suffix}"), key=lambda p: p.stat().st_mtime)
                if found and found[-1].stat().st_size:
                    parts.append(f"--- {found[-1]}\n{log_tail(found[-1], lines)}")
        return "\n".join(parts) or f"(no logs in {self.log_dir})"

    def write_config(self) -> Path:
        """Render conf/ for this cluster: the project config plus this cluster's own ports."""
        config = flink_home._deep_merge(flink_home.render_config(self.settings), self.config_overrides)
        s = self.settings
        # The JobManager RPC port must be fixed before the TaskManager starts; choosing a free one
        # lets a test cluster run beside a developer's cluster.
        config.setdefault("jobmanager", {}).setdefault("rpc", {})["port"] = _free_port(s.host)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties",
                     "log4j-session.properties", "logback.xml", "logback-console.xml", "logback-session.xml"):
            source = s.flink_home / "conf" / name
            if source.exists():
                shutil.copyfile(source, self.conf_dir / name)
        write_secret_file(self.conf_dir / "config.yaml",  # owner-only: it holds the S3 keys
                          f"# Rendered by stack/flink_cluster.py for the cluster at {self.rest_url}; edit flink-conf/.\n"
                          + yaml.safe_dump(config, sort_keys=True, width=10_000))
        (self.conf_dir / "masters").write_text(f"{s.host}:{s.flink.rest_port}\n")
        (self.conf_dir / "workers").write_text(f"{s.host}\n" * self.taskmanagers)
        return self.conf_dir

    def start(self, timeout: float | None = None) -> str:
        """Start the cluster, or reuse a healthy one; returns 'reused' or 'started'.

        Waits until the REST API reports all its TaskManagers and free slots. Raises
        FlinkClusterError with the JobManager/TaskManager log tails when it does not get there.
        """
        timeout = self.startup_timeout_s if timeout is None else timeout
        if self.healthy():
            self._start_supervisor()
            return "reused"
        start_cluster = self.script("start-cluster.sh")
        if not self.pids():
            busy = port_open(self.settings.host, self.settings.flink.rest_port)
            if busy:
                raise FlinkClusterError(
                    f"port {self.settings.flink.rest_port} on {self.settings.host} is taken by a program that "
                    f"does not answer as a Flink cluster; stop it or set VIGIL_FLINK_REST_PORT")
            for stale in self._pid_files():
                stale.unlink()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.pid_dir.mkdir(parents=True, exist_ok=True)
            self.write_config()
            # each daemon's start runs a JVM to compute its memory settings: slow on a busy machine
            result = subprocess.run([str(start_cluster)], env=self.environment(), capture_output=True,
                                    text=True, timeout=90 * (1 + self.taskmanagers))
            if result.returncode != 0:
                raise FlinkClusterError(f"{start_cluster} failed ({result.returncode}):\n"
                                        f"{_tail(result.stdout + result.stderr)}\n{self.logs()}")
        began = time.monotonic()
        overview = None
        while time.monotonic() - began < timeout:
            overview = self.overview()
            if overview and overview.get("taskmanagers", 0) >= self.taskmanagers and \
                    overview.get("slots-available", 0) >= 1:
                self._start_supervisor()
                return "started"
            # the daemons write their pid files a moment after start-cluster.sh returns
            if time.monotonic() - began > 5 and len(self.pids()) < 1 + self.taskmanagers:
                raise FlinkClusterError(f"a Flink daemon exited during start-up (live pids: {self.pids()}).\n"
                                        f"{self.logs()}")
            time.sleep(0.5)
        raise FlinkClusterError(f"the Flink cluster at {self.rest_url} did not get a TaskManager with free slots "
                                f"within {timeout:.0f}s (last overview: {overview}).\n{self.logs()}")

    # --- TaskManager supervision ---------------------------------------------------------------
    @property
    def _supervisor_pid_file(self) -> Path:
        return self.pid_dir / "supervisor.pid"

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self._supervisor_pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _start_supervisor(self) -> None:
        """Start ``python -m stack cluster supervise`` for this cluster unless one runs already."""
        if self.supervisor_pid() is not None:
            return
        env = {**self.environment(), "VIGIL_FLINK_REST_PORT": str(self.settings.flink.rest_port),
               "VIGIL_HOME": str(self.settings.home)}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / "supervisor.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "stack", "cluster", "supervise"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self._supervisor_pid_file.write_text(str(proc.pid))

    def taskmanager_pids(self) -> list[int]:
        out = []
        for path in self.pid_dir.glob(f"flink-{_IDENT}-taskexecutor.pid"):
            out += [int(p) for p in path.read_text().split() if p.isdigit() and _alive(int(p))]
        return out

    def jobmanager_pids(self) -> list[int]:
        out = []
        for path in self.pid_dir.glob(f"flink-{_IDENT}-standalonesession.pid"):
            out += [int(p) for p in path.read_text().split() if p.isdigit() and _alive(int(p))]
        return out

    def python_workers(self, taskmanager: int | None = None) -> list[int]:
        """Pids of the Python interpreters (UDF workers) under one TaskManager, or under all of them.

        Only interpreters count, not the shell script that starts each worker
        (``pyflink-udf-runner.sh``) nor its ``tee`` of the worker's log."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        todo, found = [taskmanager] if taskmanager is not None else list(self.taskmanager_pids()), []
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                todo.append(child)
                try:
                    program = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
                except OSError:
                    continue
                if Path(program.decode(errors="replace")).name.startswith("python"):
                    found.append(child)
        return found

    def supervise(self, poll_s: float = 2.0, log: Any = print) -> None:
        """Keep ``taskmanagers`` TaskManagers running while the JobManager lives (a dead TM stays dead
        in a standalone cluster otherwise): start one for each that died. Logs one line per restart."""
        taskmanager = self.script("taskmanager.sh")
        pid_file = self.pid_dir / f"flink-{_IDENT}-taskexecutor.pid"
        while self.jobmanager_pids():
            alive = self.taskmanager_pids()
            for _ in range(self.taskmanagers - len(alive)):
                log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} a TaskManager of {self.rest_url} is gone: starting "
                    f"a new one ({len(alive)} of {self.taskmanagers} running)")
                # only the live ones stay listed (taskmanager.sh appends the new one's pid)
                if alive:
                    pid_file.write_text("".join(f"{p}\n" for p in alive))
                else:
                    pid_file.unlink(missing_ok=True)
                result = subprocess.run([str(taskmanager), "start"], env=self.environment(), capture_output=True,
                                        text=True, timeout=180)
                if result.returncode != 0:
                    log(f"taskmanager.sh start failed ({result.returncode}): {_tail(result.stdout + result.stderr)}")
                alive = self.taskmanager_pids()
            time.sleep(poll_s)
        log(f"{time.strftime('%Y-%m-%d %H:%M:%S')} the JobManager of {self.rest_url} is gone: supervisor stops")

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop this cluster's daemons and wait for its ports to close; False when none was running."""
        supervisor = self.supervisor_pid()
        if supervisor is not None:  # first: it would start a new TaskManager while the cluster stops
            os.kill(supervisor, signal.SIGTERM)
            self._supervisor_pid_file.unlink(missing_ok=True)
        pids = self.pids()
        if not pids:
            return False
        subprocess.run([str(self.script("stop-cluster.sh"))], env=self.environment(), capture_output=True,
                       text=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (any(_alive(p) for p in pids) or self._ports_open()):
            time.sleep(0.3)
        for pid in pids:
            if _alive(pid):  # stop-cluster.sh gave up; these pids are ours (our pid files)
                os.kill(pid, signal.SIGKILL)
        for stale in self._pid_files():
            stale.unlink(missing_ok=True)
        if self._ports_open():
            raise FlinkClusterError(f"the Flink cluster at {self.rest_url} was stopped but port "
                                    f"{self.settings.flink.rest_port} is still open")
        return True

    def _ports_open(self) -> bool:
        return port_open(self.settings.host, self.settings.flink.rest_port)

    def status(self) -> str:
        overview = self.overview()
        if overview:
            return (f"up at {self.rest_url}: Flink {overview.get('flink-version')}, "
                    f"{overview['taskmanagers']} TaskManager(s), {overview.get('slots-available')}/"
                    f"{overview.get('slots-total')} slots free, {overview.get('jobs-running')} job(s) running")
        if self.pids():
            return f"processes {self.pids()} running but nothing answers at {self.rest_url}"
        return "down"


# --- job submission ------------------------------------------------------------------------------

def parse_job_id(output: str) -> str | None:
    """The job id a Flink client printed ('Job has been submitted with JobID ...' / 'Job ID: ...')."""
    found = _JOB_ID.findall(output)
    return found[-1] if found else None


def flink_run(settings: VigilSettings, script: Path, args: list[str], detached: bool = True,
              timeout: float = 600.0) -> str:
    """Submit a PyFlink job file to the local cluster with ``flink run -py``; returns its job id.

    The file runs unchanged: its imports resolve because the project is installed (editable)
    into the interpreter given as ``-pyexec``/``-pyclientexec``; that interpreter also runs the
    job's Python workers on the TaskManager. ``flink run`` ships opt/flink-python with the job.

    Detached (``-d``), this returns as soon as the client prints the job id and then ends the
    client: a job file that waits on its result (``result.wait()``, as the jobs here do) would
    otherwise keep the client alive for the job's whole life. The job is not affected; follow it
    with :meth:`LocalFlinkCluster.wait_for_job`. Attached, this returns when the client exits.
    Raises FlinkClusterError with the client's output tail when it fails or prints no job id.
    """
    cluster = LocalFlinkCluster(settings)
    cluster.require()
    script = Path(script).resolve()
    if not script.is_file():
        raise FlinkClusterError(f"no job file at {script}")
    command = [str(cluster.script("flink")), "run", "-m", cluster.address,
               "-py", str(script), "-pyexec", sys.executable, "-pyclientexec", sys.executable,
               *(["-d"] if detached else []), "--", *args]
    lines: list[str] = []
    # Its own session: ending the client must end its Python driver too, and nothing else.
    proc = subprocess.Popen(command, env=cluster.environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    job_id = None
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            job_id = parse_job_id("".join(lines))
            if detached and job_id:
                try:  # `flink run -d` returns once the job is submitted (the jobs check detached())
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    pass  # a job file that waits anyway: its client is ended below, the job runs on
                _say_if_waiting(cluster, job_id)
                return job_id
            time.sleep(0.2)
        if proc.returncode is None:
            raise FlinkClusterError(f"`flink run` of {script.name} did not return within {timeout:.0f}s:\n"
                                    f"{_tail(''.join(lines))}")
        reader.join(timeout=5)
        output = "".join(lines)
        job_id = parse_job_id(output)
        if proc.returncode != 0 or job_id is None:
            raise FlinkClusterError(f"`flink run -py {script}` failed (exit {proc.returncode}"
                                    f"{', no job id printed' if job_id is None else ''}):\n{_tail(output, 60)}")
        return job_id
    finally:
        _end_session(proc)


def _say_if_waiting(cluster: LocalFlinkCluster, job_id: str, grace_s: float = 10.0) -> None:
    """Print one line when a just-submitted job waits for task slots the cluster does not have."""
    deadline = time.monotonic() + grace_s
    waiting = None
    while time.monotonic() < deadline:
        try:
            waiting = cluster.waiting_for_slots(job_id)
        except FlinkClusterError:
            return
        if waiting is None and cluster.job(job_id).get("state") == "RUNNING":
            return
        time.sleep(1)
    if waiting:
        print(f"warning: {waiting}", file=sys.stderr, flush=True)


def _end_session(proc: subprocess.Popen) -> None:
    """Stop a client started in its own session (SIGTERM, then SIGKILL), if it still runs."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass
