"""What the fault-injection suite measures with: a follower of the committed output, job states, recovery.

Nothing here fakes a failure: the suite kills real processes (TaskManagers, a Python worker, a
Kafka broker) and cancels the real job; these helpers only watch what happens next.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.kafka_io import client_config
from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster


class CommittedOutput:
    """Counts the records of some topics as a read_committed consumer sees them, in a background thread.

    The count grows only when the job's Kafka transactions commit (on checkpoints): it is the
    output a downstream reader has, and its growth after a fault is what "recovered" means here.
    """

    def __init__(self, bootstrap: str, topics: list[str], partitions: int) -> None:
        self._consumer = Consumer({**client_config(bootstrap), "group.id": f"faults-follow-{time.time_ns()}",
                                   "enable.auto.commit": False, "isolation.level": "read_committed"})
        self._consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
        self.count = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="committed-output", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self._consumer.consume(num_messages=10_000, timeout=0.5):
                    if msg.error():
                        if msg.error().code() != KafkaError._PARTITION_EOF:
                            self.error = str(msg.error())
                        continue
                    self.count += 1
        finally:
            self._consumer.close()

    def wait_beyond(self, count: int, timeout: float) -> float | None:
        """Seconds until more than ``count`` records are committed, or None after ``timeout``."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.count > count:
                return time.monotonic() - began
            time.sleep(0.2)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def all_running(cluster: LocalFlinkCluster, job_id: str) -> bool:
    """The job RUNNING with every task of every vertex running (not just scheduled or deploying)."""
    try:
        job = cluster.job(job_id)
    except FlinkClusterError:
        return False
    return job.get("state") == "RUNNING" and all(v.get("status") == "RUNNING" for v in job.get("vertices", []))


def taskmanagers_of(cluster: LocalFlinkCluster, job_id: str) -> set[str]:
    """The TaskManagers (resource ids, ``host:rpcport-suffix``) that run at least one subtask of the job."""
    found = set()
    for vertex in cluster.job(job_id)["vertices"]:
        detail = cluster._request(f"/jobs/{job_id}/vertices/{vertex['id']}")
        for subtask in detail.get("subtasks", []):
            if "taskmanager-id" not in subtask:
                raise AssertionError(f"the REST API names no taskmanager-id for a subtask: {subtask}")
            found.add(subtask["taskmanager-id"])
    return found - {"(unassigned)"}


def taskmanager_pid(cluster: LocalFlinkCluster, taskmanager_id: str) -> int:
    """The pid of the TaskManager process behind a resource id: the one listening on its RPC port."""
    port = int(taskmanager_id.split("-", 1)[0].rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for pid in cluster.taskmanager_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no TaskManager process listens on port {port} ({taskmanager_id})")


def failures_since(cluster: LocalFlinkCluster, job_id: str, since_ms: int) -> int:
    """Failures the job recorded since ``since_ms`` (epoch ms): entries of its exception history."""
    info = cluster._request(f"/jobs/{job_id}/exceptions?maxExceptions=100")
    entries = (info.get("exceptionHistory") or {}).get("entries") or []
    return sum(1 for e in entries if e.get("timestamp", 0) >= since_ms)


@dataclass
class Recovery:
    """One injected fault and how long the job took to come back from it."""

    fault: str
    at_output: int            # committed records when it was injected
    running_s: float | None   # until every task ran again (None: never stopped running)
    output_s: float           # until newly committed output appeared after that
    failures: int             # failures the job recorded meanwhile (each one a restart attempt)
    note: str = ""


@dataclass
class FaultLog:
    recoveries: list[Recovery] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'fault':34s} {'at output':>10s} {'tasks running':>14s} {'output again':>13s} {'failures':>8s}"]
        for r in self.recoveries:
            running = "-" if r.running_s is None else f"{r.running_s:.1f} s"
            lines.append(f"{r.fault:34s} {r.at_output:>10d} {running:>14s} {r.output_s:>11.1f} s {r.failures:>8d}"
                         + (f"  {r.note}" if r.note else ""))
        return "\n".join(lines)


def measure(log: FaultLog, fault: str, cluster: LocalFlinkCluster, job: Callable[[], str], output: CommittedOutput,
            inject: Callable[[], str | None], *, restart_expected: bool, timeout: float) -> Recovery:
    """Inject a fault, then wait for the job's tasks to run again and for new committed output.

    ``job()`` names the job now running (a cancel + resume starts a new one; ``inject`` may
    return a note). Raises AssertionError, naming the fault, when the job does not come back
    within ``timeout`` seconds.
    """
    job_id = job()
    before, restarts, since_ms = output.count, cluster.job_restarts(job_id), int(time.time() * 1000)
    began = time.monotonic()
    note = inject() or ""
    running_s = None
    if restart_expected:
        while time.monotonic() - began < timeout:
            now = job()
            if now != job_id or cluster.job_restarts(now) > restarts or not all_running(cluster, now):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"{fault}: the job never noticed it ({timeout:.0f} s)")
        while not all_running(cluster, job()):
            if time.monotonic() - began > timeout:
                raise AssertionError(f"{fault}: the job's tasks were not all running again within {timeout:.0f} s; "
                                     f"latest exception:\n{cluster.job_exception(job()) or '(none)'}")
            time.sleep(0.2)
        running_s = time.monotonic() - began
    at_running = output.count if restart_expected else before
    waited = output.wait_beyond(at_running, timeout - (time.monotonic() - began))
    if waited is None:
        raise AssertionError(f"{fault}: no new committed output within {timeout:.0f} s (at {output.count}); "
                             f"latest exception:\n{cluster.job_exception(job()) or '(none)'}")
    output_s = time.monotonic() - began
    failures = failures_since(cluster, job_id, since_ms) + (failures_since(cluster, job(), since_ms)
                                                             if job() != job_id else 0)
    recovery = Recovery(fault, before, running_s, output_s, failures, note)
    log.recoveries.append(recovery)
    running = "never stopped" if running_s is None else f"running again after {running_s:.1f} s"
    print(f"  {fault}: tasks {running}, committed output again after {output_s:.1f} s ({failures} job "
          f"failure(s) recorded) {note}", flush=True)
    return recovery
