"""Flink environments for every job, configured from the Flink home's config.yaml.

PyFlink's local (mini-cluster) environments do not read ``config.yaml`` by themselves, so the
Python worker settings (interpreter, process mode, Arrow batch size), checkpointing and restart
strategy would silently fall back to Flink's defaults. These helpers load the file with Flink's
own ``GlobalConfiguration`` from ``FLINK_CONF_DIR`` (set by ``stack.flink_home.activate`` locally,
or by the cluster's scripts under ``flink run``) and apply per-job overrides on top.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, TableEnvironment


def load_configuration(overrides: dict[str, Any] | None = None) -> Configuration:
    """config.yaml from FLINK_CONF_DIR (when set) plus ``overrides`` (values are str()-ed)."""
    conf_dir = os.environ.get("FLINK_CONF_DIR")
    if conf_dir:
        j_conf = get_gateway().jvm.org.apache.flink.configuration.GlobalConfiguration.loadConfiguration(conf_dir)
        config = Configuration(j_configuration=j_conf)
    else:
        config = Configuration()
    rest_port = config.get_string("rest.port", "8081")
    if "PYFLINK_GATEWAY_PORT" not in os.environ and rest_port.isdigit():
        # An embedded mini-cluster: its web UI takes the first free port above the standalone
        # cluster's, so a local job and `python -m stack cluster up` never fight over one port.
        port = int(rest_port)
        config.set_string("rest.bind-port", f"{port + 1}-{port + 50}")
    for key, value in (overrides or {}).items():
        config.set_string(key, str(value).lower() if isinstance(value, bool) else str(value))
    if "PYFLINK_GATEWAY_PORT" not in os.environ:
        _load_filesystem_plugins(config)
        if not config.contains_key("python.executable"):
            # an embedded mini-cluster without the project's config.yaml: its Python workers would run
            # Flink's default "python", which need not be this interpreter nor have PyFlink
            config.set_string("python.executable", sys.executable)
    return config


def _load_filesystem_plugins(config: Configuration) -> None:
    """Make the embedded mini-cluster see plugins/ (s3a:// via flink-s3-fs-hadoop) and the S3 keys.

    A standalone cluster's processes do this at start-up; PyFlink's in-process mini-cluster does
    not, and s3a:// paths would fail with UnsupportedFileSystemSchemeException.
    """
    jvm = get_gateway().jvm
    j_conf = config._j_configuration
    plugins = jvm.org.apache.flink.core.plugin.PluginUtils.createPluginManagerFromRootFolder(j_conf)
    jvm.org.apache.flink.core.fs.FileSystem.initialize(j_conf, plugins)


def checkpointing(plan: Any) -> dict[str, str]:
    """The checkpoint-interval override a job's plan asks for (none: config.yaml's interval stands)."""
    interval = getattr(plan, "checkpoint_interval", None)
    return {"execution__checkpointing__interval": interval} if interval else {}


def detached(t_env: Any) -> bool:
    """True when the job was submitted with ``flink run -d``: its client must return, not wait."""
    return os.environ.get("PYFLINK_GATEWAY_PORT") is not None and \
        t_env.get_config().get("execution.attached", "true").lower() == "false"


def table_environment(*, streaming: bool = True, **overrides: Any) -> TableEnvironment:
    """A TableEnvironment with the project configuration; keyword keys use '__' for '.'."""
    config = load_configuration({k.replace("__", "."): v for k, v in overrides.items()})
    builder = EnvironmentSettings.new_instance()
    builder = builder.in_streaming_mode() if streaming else builder.in_batch_mode()
    return TableEnvironment.create(builder.with_configuration(config).build())


def stream_environment(**overrides: Any) -> StreamExecutionEnvironment:
    """A StreamExecutionEnvironment with the project configuration (see table_environment)."""
    config = load_configuration({k.replace("__", "."): v for k, v in overrides.items()})
    return StreamExecutionEnvironment.get_execution_environment(config)


def stream_table_environment(**overrides: Any) -> tuple[StreamExecutionEnvironment, Any]:
    """(StreamExecutionEnvironment, StreamTableEnvironment) sharing the project configuration.

    Needed where a job crosses between the Table and DataStream APIs (to_data_stream /
    from_data_stream), e.g. to compute an expensive Python step once and fan its result out.
    """
    from pyflink.table import StreamTableEnvironment

    env = stream_environment(**overrides)
    config = load_configuration({k.replace("__", "."): v for k, v in overrides.items()})
    settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(config).build()
    return env, StreamTableEnvironment.create(env, environment_settings=settings)
