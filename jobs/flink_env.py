"""Flink environments for every job, configured from the Flink home's config.yaml.

PyFlink's local (mini-cluster) environments do not read ``config.yaml`` by themselves, so the
Python worker settings (interpreter, process mode, Arrow batch size), checkpointing and restart
strategy would silently fall back to Flink's defaults. These helpers load the file with Flink's
own ``GlobalConfiguration`` from ``FLINK_CONF_DIR`` (set by ``stack.flink_home.activate`` locally,
or by the cluster's scripts under ``flink run``) and apply per-job overrides on top.
"""
from __future__ import annotations

import os
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
    for key, value in (overrides or {}).items():
        config.set_string(key, str(value).lower() if isinstance(value, bool) else str(value))
    return config


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
