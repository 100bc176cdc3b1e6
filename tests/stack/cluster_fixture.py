"""A real Flink standalone cluster for the tests that submit jobs to one (flink run, sql-client).

Import the fixture into a test module (``from tests.stack.cluster_fixture import flink_cluster``).
It is module-scoped: each module that uses it starts a cluster and stops it at its end. The
cluster listens on a free port, never the configured one, so it runs beside a developer's
cluster and beside the local mini-clusters other tests start. A cluster that cannot start fails
the tests (with the JobManager/TaskManager log tails); nothing is skipped.
"""
from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest

from stack.flink_cluster import FlinkClusterError, LocalFlinkCluster
from vigil.settings import VigilSettings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def flink_cluster(flink_activated: VigilSettings) -> Iterator[LocalFlinkCluster]:
    """A started LocalFlinkCluster (1 JobManager, 1 TaskManager with 2 slots) on a free port."""
    settings = flink_activated.evolve(flink__rest_port=free_port(flink_activated.host))
    cluster = LocalFlinkCluster(settings)
    try:
        cluster.start()
    except FlinkClusterError as exc:
        cluster.stop()
        pytest.fail(f"the Flink standalone cluster could not be started for the tests: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        stopped = cluster.stop()
        assert stopped, f"the test cluster at {cluster.rest_url} was gone before teardown"
        assert not cluster.pids() and cluster.overview() is None, f"{cluster.rest_url} still answers after stop()"
        shutil.rmtree(cluster.dir, ignore_errors=True)
