"""Shared fixtures: the real local services, started once per session and never faked.

A service that cannot be started fails the tests that need it (pytest.fail); nothing is skipped.
Each test gets its own topic names, so tests never see each other's records.
"""
from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Callable

import pytest

from stack import flink_home
from stack.services import KafkaBroker, Mosquitto, S3Server, ServiceError
from vigil.settings import VigilSettings


@pytest.fixture(autouse=True)
def _restore_environment():
    """Undo environment changes a test leaves behind.

    PyFlink runs local jobs' Python workers inside this process ("loopback" mode), and its worker
    pool copies the job's environment into os.environ (PYFLINK_GATEWAY_DISABLED, FLINK_CONF_DIR,
    ...); without this, one test's job would configure the next test's JVM or subprocesses.
    """
    # set by PyFlink's loopback workers while a job runs in this process, it can outlive the job (in
    # a module fixture's setup); a subprocess that inherits it refuses to start its own Flink
    os.environ.pop("PYFLINK_GATEWAY_DISABLED", None)
    # A loopback worker copies its job's environment when it starts, which may be after the test
    # that ran the job ended; a standalone cluster's job brings that cluster's FLINK_CONF_DIR (gone
    # once its module stops it) and the JAVA_HOME="" of Flink's scripts, and every later JVM this
    # process or its children start would read a missing config or run "bin/java".
    if os.environ.get("JAVA_HOME") == "":
        del os.environ["JAVA_HOME"]
    # ... and what points PyFlink at a Flink home goes back to the project's once flink_activated
    # set it: a local job reading no config.yaml would run its Python workers with "python"
    os.environ.update(_FLINK_ENV)
    conf_dir = os.environ.get("FLINK_CONF_DIR")
    if conf_dir and not os.path.isdir(conf_dir):
        del os.environ["FLINK_CONF_DIR"]
    saved, cwd, path = dict(os.environ), os.getcwd(), list(sys.path)
    yield
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    os.environ.update(saved)
    # the worker pool also changes directory and sys.path for a job, and restores them only when
    # its last worker stops (which a killed TaskManager's worker never does)
    if os.getcwd() != cwd:
        os.chdir(cwd)
    sys.path[:] = path


_JAVA_CAUSES: dict[str, list[str]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep the "Caused by" lines of a failed test's Java error: the report's tail shows them (a long
    Java trace is cut in the middle, where the root cause is)."""
    report = yield
    if report.failed and call.excinfo is not None:
        causes = [line.strip() for line in str(call.excinfo.value).splitlines() if line.strip().startswith("Caused by")]
        if causes:
            _JAVA_CAUSES[item.nodeid] = list(dict.fromkeys(causes))[-4:]
    return report


def pytest_terminal_summary(terminalreporter):
    if _JAVA_CAUSES:
        terminalreporter.section("root causes of Java errors")
        for nodeid, causes in _JAVA_CAUSES.items():
            terminalreporter.write_line(nodeid)
            for cause in causes:
                terminalreporter.write_line(f"    {cause[:400]}")


@pytest.fixture(scope="session")
def stack_settings() -> VigilSettings:
    return VigilSettings.load()


def _start(service) -> None:
    try:
        service.start()
    except ServiceError as exc:
        pytest.fail(f"{service.name} could not be started for the tests: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: VigilSettings) -> str:
    """Bootstrap address of the real local Kafka broker (started if not running)."""
    _start(KafkaBroker(stack_settings))
    return stack_settings.bootstrap_servers


@pytest.fixture(scope="session")
def s3_settings(stack_settings: VigilSettings) -> VigilSettings:
    """Settings of the real local S3 server (s3proxy, started if not running) with its bucket."""
    _start(S3Server(stack_settings))
    return stack_settings


@pytest.fixture(scope="session")
def mqtt_settings(stack_settings: VigilSettings) -> VigilSettings:
    """Settings of the real local Mosquitto broker (started if not running)."""
    _start(Mosquitto(stack_settings))
    return stack_settings


_FLINK_ENV: dict[str, str] = {}   # the variables flink_activated set, restored before every later test


@pytest.fixture(scope="session")
def flink_activated(stack_settings: VigilSettings) -> VigilSettings:
    """Point PyFlink at the project's Flink home (with the Kafka connector jars)."""
    try:
        flink_home.activate(stack_settings)
    except flink_home.FlinkHomeError as exc:
        pytest.fail(str(exc), pytrace=False)
    _FLINK_ENV.update({key: os.environ[key] for key in flink_home.environment(stack_settings) if key in os.environ})
    return stack_settings


@pytest.fixture
def new_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: ``new_topic("in", partitions=3)`` creates a topic unique to this test."""
    from connectors.kafka_io import create_topic

    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:60].strip("-")

    def make(suffix: str = "t", partitions: int = 3) -> str:
        name = f"test.{base}.{suffix}.{uuid.uuid4().hex[:8]}"
        create_topic(kafka_bootstrap, name, partitions=partitions)
        return name

    return make


# A small autoencoder trained once per session (no Kafka needed): see tests/trained_model.py.
from tests.trained_model import model_dir, point_model, trained_model  # noqa: E402,F401
