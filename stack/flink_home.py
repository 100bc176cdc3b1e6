"""Assemble the project-local Flink home and point PyFlink at it.

The apache-flink wheel ships a Flink distribution inside ``pyflink/`` but without the Kafka
connector, the Avro and Parquet formats, the S3 filesystem plugin and the SQL gateway jar. This
module builds ``<home>/flink`` from the wheel's ``bin``/``lib``/``opt``/``plugins`` plus the jars
Maven resolved (stack/maven), with ``conf/config.yaml`` rendered from ``flink-conf/``. The jobs,
``flink run`` and ``sql-client.sh`` all use this one home.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import yaml

from vigil.settings import PROJECT_ROOT, VigilSettings, write_secret_file

FLINK_CONF_SOURCE = PROJECT_ROOT / "flink-conf"


class FlinkHomeError(RuntimeError):
    """The Flink home is missing parts; the message says what to run."""


def wheel_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _link_all(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir()):
        target = dst / item.name
        if target.is_symlink() or target.exists():
            continue
        target.symlink_to(item)


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render_config(settings: VigilSettings, profile: str = "local") -> dict:
    """The effective Flink config: flink-conf/config.yaml, the profile overlay, then local paths."""
    config = yaml.safe_load((FLINK_CONF_SOURCE / "config.yaml").read_text()) or {}
    overlay = FLINK_CONF_SOURCE / f"config.{profile}.yaml"
    if overlay.exists():
        config = _deep_merge(config, yaml.safe_load(overlay.read_text()) or {})
    # Every profile: Python workers use the project's interpreter (not whatever `python` is on PATH),
    # and the S3 endpoint and keys come from the settings (environment), never from a file in git.
    s3 = settings.s3
    machine: dict = {
        "python": {"executable": sys.executable, "client": {"executable": sys.executable}},
        "s3": {
            "endpoint": s3.endpoint,
            "path.style.access": True,
            **({"access-key": s3.access_key.get_secret_value(), "secret-key": s3.secret_key.get_secret_value()}
               if s3.access_key and s3.secret_key else {}),
            # Only these keys, and a fixed region: otherwise S3A walks its credential and region
            # chains, which probe the cloud metadata address and stall for minutes off-cloud.
            "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
            "endpoint.region": "us-east-1",
        },
    }
    if profile == "local":
        # One machine: everything on loopback, the local s3proxy, state under VIGIL_HOME. Other
        # profiles take addresses and storage from their overlay (config.cluster.yaml).
        machine.update({
            "rest": {"port": settings.flink.rest_port, "address": settings.host, "bind-address": settings.host},
            "jobmanager": {"rpc": {"address": settings.host}, "bind-host": settings.host},
            "taskmanager": {"host": settings.host, "bind-host": settings.host},
            "io": {"tmp": {"dirs": str(settings.home / "flink-tmp")}},
            "execution": {"checkpointing": {
                "dir": (settings.home / "checkpoints").as_uri(),
                "savepoint-dir": (settings.home / "savepoints").as_uri(),
            }},
        })
    if settings.flink.rest_ssl:
        machine["security"] = {"ssl": {"rest": rest_ssl(settings)}}
    return _deep_merge(config, machine)


def rest_ssl(settings: VigilSettings) -> dict:
    """Flink's ``security.ssl.rest.*`` for https with the local certificate (stack/certs.py, made at setup).

    The server (JobManager REST, web UI) presents ``server.p12``; Flink's REST clients (``flink run``,
    the cluster helper) trust the local CA through ``truststore.p12``. The keystore password lands
    in the rendered config.yaml, which is written 0600.
    """
    from stack import certs

    try:
        tls = certs.files(settings)
    except certs.CertificateError as exc:
        raise FlinkHomeError(f"flink.rest_ssl is on but {exc}") from None
    password = tls.password.get_secret_value()
    return {"enabled": True, "keystore": str(tls.keystore), "keystore-type": "PKCS12",
            "keystore-password": password, "key-password": password, "truststore": str(tls.truststore),
            "truststore-type": "PKCS12", "truststore-password": password}


def build(settings: VigilSettings) -> Path:
    """Create or refresh ``<home>/flink``; idempotent. Returns the Flink home path."""
    wheel = wheel_home()
    downloads = settings.downloads
    needed = {
        "flink-lib": "flink-sql-connector-kafka-*.jar",
        "flink-opt": "flink-sql-gateway-*.jar",
        "flink-s3-plugin": "flink-s3-fs-hadoop-*.jar",
        "hadoop": "hadoop-common-*.jar",
    }
    for folder, pattern in needed.items():
        if not list((downloads / folder).glob(pattern)):
            raise FlinkHomeError(f"{downloads / folder} has no {pattern}; run `python -m stack setup` first")

    home = settings.flink_home
    home.mkdir(parents=True, exist_ok=True)
    # bin/ is copied, not linked: config.sh derives FLINK_HOME from the script's real location.
    if (home / "bin").is_symlink():
        (home / "bin").unlink()
    shutil.copytree(wheel / "bin", home / "bin", dirs_exist_ok=True)
    for script in (home / "bin").iterdir():
        script.chmod(0o755)
    _link_all(wheel / "lib", home / "lib")
    _link_all(downloads / "flink-lib", home / "lib")
    _link_all(wheel / "opt", home / "opt")
    _link_all(downloads / "flink-opt", home / "opt")
    _link_all(wheel / "plugins", home / "plugins")
    _link_all(downloads / "flink-s3-plugin", home / "plugins" / "s3-fs-hadoop")
    (home / "log").mkdir(exist_ok=True)
    (settings.home / "flink-tmp").mkdir(parents=True, exist_ok=True)

    conf = home / "conf"
    conf.mkdir(exist_ok=True)
    for name in ("log4j.properties", "log4j-cli.properties", "log4j-console.properties",
                 "log4j-session.properties", "logback.xml", "logback-console.xml", "logback-session.xml"):
        source = FLINK_CONF_SOURCE / name if (FLINK_CONF_SOURCE / name).exists() else wheel / "conf" / name
        shutil.copyfile(source, conf / name)
    # owner-only: it holds the S3 keys
    write_secret_file(conf / "config.yaml",
                      "# Rendered by stack/flink_home.py from flink-conf/; edit those files, not this one.\n"
                      + yaml.safe_dump(render_config(settings), sort_keys=True, width=10_000))
    (conf / "masters").write_text(f"{settings.host}:{settings.flink.rest_port}\n")
    (conf / "workers").write_text(f"{settings.host}\n")
    return home


def hadoop_classpath(settings: VigilSettings) -> str:
    return str(settings.downloads / "hadoop" / "*")


def environment(settings: VigilSettings) -> dict[str, str]:
    """Variables that make PyFlink, `flink` and `sql-client.sh` use the project's Flink home."""
    home = settings.flink_home
    return {
        "FLINK_HOME": str(home),
        "FLINK_CONF_DIR": str(home / "conf"),
        "FLINK_PLUGINS_DIR": str(home / "plugins"),
        "HADOOP_CLASSPATH": hadoop_classpath(settings),
        "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
    }


def activate(settings: VigilSettings) -> None:
    """Point this process (and the JVM PyFlink launches) at the project's Flink home.

    Must run before the first PyFlink environment is created. Raises FlinkHomeError when the
    home was never built. Under ``flink run`` (PYFLINK_GATEWAY_PORT set) the JVM and its
    configuration belong to the cluster client, so nothing is changed.
    """
    if "PYFLINK_GATEWAY_PORT" in os.environ:
        return
    build(settings)  # cheap when up to date; re-renders conf for the current settings
    env = environment(settings)
    # The embedded mini-cluster loads metric reporters from the JVM's classpath only (PyFlink's
    # PerJobMiniClusterFactory gives it no plugin manager), so the Prometheus reporter that
    # config.local.yaml names must be on the PyFlink gateway's classpath, to which PyFlink's
    # launcher appends HADOOP_CLASSPATH. Only here: the standalone cluster's daemons take
    # environment() as it is and load the reporter from plugins/, as Flink intends.
    env["HADOOP_CLASSPATH"] = os.pathsep.join([env["HADOOP_CLASSPATH"], *map(str, reporter_jars(settings))])
    if os.environ.get("JAVA_HOME") == "":  # PyFlink's launcher would run "bin/java"; PATH's java is meant
        del os.environ["JAVA_HOME"]
    os.environ.update(env)


def reporter_jars(settings: VigilSettings) -> list[Path]:
    """The Flink home's Prometheus reporter plugin jars (plugins/metrics-prometheus, from the wheel)."""
    jars = sorted((settings.flink_home / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"))
    if not jars:
        raise FlinkHomeError(f"{settings.flink_home / 'plugins' / 'metrics-prometheus'} has no "
                             "flink-metrics-prometheus jar; rebuild the Flink home with `python -m stack setup`")
    return jars
