"""The Flink SQL client with a Vigil session: interactive, or a script whose errors come back in one line.

``sql-client.sh -i <session>/init.sql`` runs against the standalone cluster (its conf dir names the
REST address); the init script declares the catalog and adds the session's jar of functions
(jobs/sql/catalog.py, jobs/sql/functions.py) and flink-python, which the planner needs for
Python calls and every job ships to the TaskManager.

A script (``-f``) stops at its first failing statement. What failed is reported as one line:
the planner's message for a statement that was refused (a wrong argument list names the
features the function expects), the Python exception for a job whose Python worker raised
(found in the job's exception on the cluster), else the Java exception's message.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from jobs.sql.catalog import Session, SessionSettings, literal
from jobs.sql.functions import build_jar
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster
from vigil.settings import VigilSettings, write_secret_file

KEEP_SESSIONS = 10
# What a script's session sets: results as text tables, values uncut, whole exception chains (the
# planner's signature of a function is in a cause the short form leaves out).
SCRIPT_SETTINGS = ["SET 'sql-client.execution.result-mode' = 'tableau'",
                   "SET 'sql-client.display.max-column-width' = '4000'",
                   "SET 'sql-client.verbose' = 'true'"]
_PY_EXCEPTION = re.compile(r"^((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning)): (.+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_JAVA_EXCEPTION = re.compile(r"^((?:[a-z_]\w*\.)+[A-Z]\w*(?:Exception|Error)): ?(.*)$")


class SqlClientError(RuntimeError):
    """A statement of a SQL script failed (refused by the planner, or its job failed); one line says why."""


def new_session_id() -> str:
    return uuid.uuid4().hex[:10]


@dataclass(frozen=True)
class SessionFiles:
    """A session on disk: ``init.sql`` (owner-only) and ``functions.jar`` in ``<home>/sql/sessions/<id>/``."""

    folder: Path
    init: Path
    jar: Path


def flink_python_jar(settings: VigilSettings) -> Path:
    found = sorted((settings.flink_home / "opt").glob("flink-python-*.jar"))
    if not found:
        raise FlinkClusterError(f"no flink-python jar in {settings.flink_home / 'opt'}; build the Flink home with "
                                f"`python -m stack setup`")
    return found[-1]


def write_session(session: Session, settings: VigilSettings, session_id: str, *, header: str = "",
                  extra: list[str] | None = None) -> SessionFiles:
    """Write the session's jar and init script (``extra``: statements after the catalog's)."""
    root = settings.home / "sql" / "sessions"
    folder = root / session_id
    jar = build_jar(session.functions, folder / "functions.jar", settings.flink_home / "lib",
                    settings.home / "sql" / "classes")
    adds = [f"ADD JAR {literal(jar)}", f"ADD JAR {literal(flink_python_jar(settings))}"]
    text = header + "".join(f"{s};\n\n" for s in [*adds, *session.statements, *(extra or [])])
    init = folder / "init.sql"
    write_secret_file(init, text)  # paths of the secret file and stores; never a secret
    _prune(root, keep=folder)
    return SessionFiles(folder, init, jar)


def _prune(root: Path, keep: Path) -> None:
    """Remove all but the newest sessions (a submitted job has its jars on the cluster already)."""
    sessions = sorted((p for p in root.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    for old in sessions[:max(0, len(sessions) - KEEP_SESSIONS + 1)]:
        shutil.rmtree(old, ignore_errors=True)


def client_command(cluster: LocalFlinkCluster, files: SessionFiles, script: Path | None = None) -> list[str]:
    """``sql-client.sh -i init.sql [-f script]`` against the cluster, with the project's interpreter.

    ``-pyexec``/``-pyclientexec`` name the interpreter that has the project installed (editable), so
    the pickled udfs/ functions import in the TaskManager's Python workers without shipping files.
    """
    command = [str(cluster.script("sql-client.sh")), "-i", str(files.init)]
    if script is not None:
        command += ["-f", str(script)]
    return command + ["-pyexec", sys.executable, "-pyclientexec", sys.executable, "-Dexecution.target=remote"]


def interactive(cluster: LocalFlinkCluster, files: SessionFiles) -> int:
    """Open the SQL client on this terminal; returns its exit code."""
    cluster.require()
    return subprocess.run(client_command(cluster, files), env=cluster.environment()).returncode


@dataclass
class ScriptResult:
    """What running a script printed, the jobs its statements submitted, and the first error (one line)."""

    output: str
    job_ids: list[str] = field(default_factory=list)
    error: str | None = None


def run_script(cluster: LocalFlinkCluster, files: SessionFiles, script: Path, timeout: float = 600.0) -> ScriptResult:
    """Run ``script`` in the session; the first failing statement is ``error`` (the client stops there)."""
    cluster.require()
    started_ms = int(time.time() * 1000)
    try:
        result = subprocess.run(client_command(cluster, files, script), env=cluster.environment(),
                                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise FlinkClusterError(f"sql-client.sh did not finish {script} within {timeout:.0f}s") from exc
    output = _ANSI.sub("", result.stdout + ("\n" + result.stderr if result.stderr.strip() else ""))
    job_ids = list(dict.fromkeys(re.findall(r"Job ID:\s*([0-9a-f]{32})", output)))
    error = statement_error(output)
    if error is not None:
        # A query whose job failed: the cluster has the whole failure, the Python error included.
        failed = failed_jobs_since(cluster, started_ms)
        if failed:
            error = job_failure(cluster, failed[-1]) or error
    elif result.returncode != 0:
        error = f"sql-client.sh exited with {result.returncode}: {one_line(output.strip()[-2000:])}"
    return ScriptResult(output, job_ids, error)


def statement_error(output: str) -> str | None:
    """The first ``[ERROR]`` the client printed, as one line (the exceptions' own messages, no stack)."""
    index = output.find("[ERROR]")
    if index < 0:
        return None
    lines = output[index:].splitlines()
    body: list[str] = []
    for line in lines[1:]:
        if line.startswith(("Flink SQL>", "[INFO]", "[ERROR]", "Shutting down the session", "SLF4J:")):
            break
        body.append(line)
    text = "\n".join(body)
    return python_error(text) or exception_message(text) or one_line(lines[0])


def exception_message(text: str) -> str | None:
    """The messages of a Java exception chain on one line: its last ``Caused by`` (the most specific),
    preceded by nothing else unless an earlier cause holds the planner's signature of a function."""
    chain: list[list[str]] = []
    open_message = False
    for raw in text.splitlines():
        line = raw.strip()
        match = _JAVA_EXCEPTION.match(line.removeprefix("Caused by: "))
        if match:
            chain.append([match.group(2)] if match.group(2) else [])
            open_message = True
        elif re.match(r"^(at |\.\.\. \d+ more|End of exception)", line) or not line:
            open_message = False  # a message ends where its stack trace starts
        elif open_message and chain and not line.startswith("Reason:"):
            chain[-1].append(line)
    messages = list(dict.fromkeys(" ".join(m).strip() for m in chain if " ".join(m).strip()))
    if not messages:
        return None
    # The planner's signature (it names a function's arguments) sits in one cause, the detail (which
    # argument is wrong) in the last: both, most specific first.
    signature = next((m for m in messages if "signatures are:" in m), None)
    if signature and signature != messages[-1]:
        return one_line(f"{messages[-1]} {signature}")
    return one_line(signature or messages[-1])


def python_error(text: str | None) -> str | None:
    """``ExceptionType: message`` of the last Python traceback in a (Java) stack trace, or None."""
    if not text:
        return None
    index = text.rfind("Traceback (most recent call last):")
    if index < 0:
        return None
    found = None
    for line in text[index:].splitlines()[1:]:
        if line.startswith((" ", "\t")):
            continue
        match = _PY_EXCEPTION.match(line.strip())
        if match:
            found = f"{match.group(1)}: {match.group(2).strip()}"
            break
    return one_line(found) if found else None


def one_line(text: str, limit: int = 1500) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


def failed_jobs_since(cluster: LocalFlinkCluster, since_ms: int) -> list[str]:
    try:
        jobs = cluster.jobs()
    except FlinkClusterError:
        return []
    failed = [j for j in jobs if j.get("state") == "FAILED" and j.get("start-time", 0) >= since_ms]
    return [j["jid"] for j in sorted(failed, key=lambda j: j.get("start-time", 0))]


def job_failure(cluster: LocalFlinkCluster, job_id: str) -> str | None:
    """Why a job failed, in one line: the Python exception when a Python worker raised it."""
    trace = cluster.job_exception(job_id)
    if not trace:
        return None
    python = python_error(trace)
    if python:
        return f"job {job_id} failed in a Python worker: {python}"
    return f"job {job_id} failed: {exception_message(trace) or one_line(trace.splitlines()[0])}"


def report_jobs(cluster: LocalFlinkCluster, job_ids: list[str], timeout: float, started: float) -> int:
    """Wait for each job to end; print how it ended (a failure in one line); 0 when all FINISHED.

    FlinkClusterError (with the job's latest exception) when one is still running after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    code = 0
    for job_id in job_ids:
        state = cluster.wait_for_job(job_id, max(1.0, deadline - time.monotonic()))
        print(f"job {job_id} {state} after {time.monotonic() - started:.1f}s", flush=True)
        if state != "FINISHED":
            why = job_failure(cluster, job_id) if state == "FAILED" else None
            print(f"error: {why or f'job {job_id} ended {state}'}", file=sys.stderr, flush=True)
            code = 1
    return code



def session_settings(settings: VigilSettings, session_id: str, **overrides: object) -> SessionSettings:
    """The session's inputs from the system settings: addresses, the store, the secret's file (a path)."""
    model_store = settings.model_store
    if "://" not in model_store:  # the Python workers run elsewhere: a relative path would not resolve there
        model_store = str(Path(model_store).resolve())
    secret = settings.pseudonym.secret_file
    values: dict[str, object] = dict(
        bootstrap_servers=settings.bootstrap_servers, model_store=model_store,
        secret_file=str(Path(secret).resolve()) if secret else None, python=sys.executable, session_id=session_id,
        tier=None if settings.tier.lower() == "none" else settings.tier or None,
        tier_root=None if settings.tier else (settings.home / "tier").as_uri())
    values["s3"] = settings.s3_for(model_store, values["tier"], values["tier_root"])
    values.update(overrides)
    return SessionSettings(**values)  # type: ignore[arg-type]
