"""Every setting of Vigil with its one default: the typed, frozen model built once at each entry point.

Where a value comes from, the first source that has it winning:

1. command-line flags (each command passes them as ``overrides``; see vigil/commands.py);
2. environment variables ``VIGIL_<SECTION>_<FIELD>`` (``VIGIL_KAFKA_BOOTSTRAP_SERVERS``,
   ``VIGIL_S3_ENDPOINT``, ``VIGIL_MODEL_STORE``) or ``VIGIL_<FIELD>`` for top-level fields
   (``VIGIL_HOME``, ``VIGIL_TIER``);
3. a config file, TOML or YAML, named by ``--config FILE`` or ``VIGIL_CONFIG``, with the same
   sections (``[kafka] bootstrap_servers = "..."``);
4. the secrets the local stack generated at setup (``<home>/secrets/``: S3 keys; the pseudonym key
   is read from its file by the workers themselves);
5. the defaults below. Defaults that depend on another value (the broker address on the host and
   port, every folder on ``home``) are derived from it.

Secrets (the pseudonymisation secret, the S3 keys) are ``SecretStr``: printing, logging or
dumping the settings shows ``**********``. They never travel inside a Flink job graph: jobs pass
the secret *file* (a path) and the S3 endpoint to the workers, and every worker reads the secret
values itself from its own environment or that file (:func:`read_pseudonym_secret`,
:meth:`S3Settings.with_worker_credentials`).

This module imports nothing else of the project: every layer may use it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "VIGIL_CONFIG"
PSEUDONYM_SECRET_ENV = "VIGIL_PSEUDONYM_SECRET"
PSEUDONYM_SECRET_FILE_ENV = "VIGIL_PSEUDONYM_SECRET_FILE"
S3_CREDENTIALS_FILE = "s3.json"  # under <home>/secrets/, written by `python -m stack setup`
KAFKA_CREDENTIALS_FILE = "kafka.json"  # under <home>/secrets/: the local brokers' SASL/SCRAM user, made by setup
TLS_DIR = "tls"  # under <home>/secrets/: the local CA and server certificate (stack/certs.py), made by setup


class SettingsError(ValueError):
    """A setting has a bad value or a config file cannot be read; the message names which."""


class Section(BaseModel):
    """One group of settings; unknown keys are refused, so a typo in a config file is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Section):
    """The Kafka cluster every client connects to, how it authenticates, and the local brokers' ports.

    ``security_protocol = SASL_SSL`` makes every client of the project (Python producers, consumers
    and admin clients, Flink's Kafka connectors) log in with SASL/SCRAM over TLS, and the local
    stack's brokers (``python -m stack up kafka``) accept nothing else. Every client's
    configuration is derived from these fields by one function (connectors.kafka_io.client_config
    and its Flink twin connectors.flink_kafka.client_properties).
    """

    bootstrap_servers: str = Field("", description="Kafka bootstrap servers, host:port[,host:port] "
                                                    "(default: the local brokers, <host>:<kafka.port + 2i>)")
    port: int = Field(9092, ge=1, le=65535, description="port of the local broker (stack); broker i (0-based) "
                                                        "of a local cluster listens on port + 2i")
    controller_port: int = Field(9093, ge=1, le=65535, description="KRaft controller port of the local broker; "
                                                                   "broker i: controller_port + 2i")
    brokers: int = Field(1, ge=1, le=9, description="brokers of the local Kafka cluster (stack): 1, or 3 for "
                                                    "replication factor 3 and min ISR 2")
    security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients connect: PLAINTEXT (the local default) or SASL_SSL "
                                 "(SASL/SCRAM login over TLS)")
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field("SCRAM-SHA-512",
                                                                      description="SASL mechanism (SASL_SSL)")
    sasl_username: str | None = Field(None, description="SASL user (default: the local brokers' user, made by "
                                                        "setup in <home>/secrets/kafka.json)")
    sasl_password: SecretStr | None = Field(None, description="SASL password (default: setup's, with the user)")
    ssl_ca_file: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates "
                                                       "(default: <home>/secrets/tls/ca.pem, made by setup)")
    sasl_secret_file: Path | None = Field(None, description="file the Flink Kafka clients read their SASL login "
                                                            "from, written 0600 from user and password (default: "
                                                            "<home>/secrets/kafka-sasl.properties)")

    def require_sasl(self) -> tuple[str, str]:
        """(user, password) for a SASL_SSL connection; SettingsError naming what is missing."""
        if not (self.sasl_username and self.sasl_password and self.sasl_password.get_secret_value()):
            raise SettingsError("kafka.security_protocol is SASL_SSL but no SASL login is configured: set "
                                "VIGIL_KAFKA_SASL_USERNAME and VIGIL_KAFKA_SASL_PASSWORD, or run `python -m stack "
                                "setup`, which makes the local brokers' user")
        return self.sasl_username, self.sasl_password.get_secret_value()

    def require_ca_file(self) -> Path:
        """The CA file a TLS connection verifies the brokers with; SettingsError when it does not exist."""
        if self.ssl_ca_file is None or not self.ssl_ca_file.is_file():
            raise SettingsError(f"kafka.ssl_ca_file {self.ssl_ca_file or '(not set)'} does not exist: set "
                                f"VIGIL_KAFKA_SSL_CA_FILE to the CA of the brokers' certificates, or run `python -m "
                                f"stack setup`, which makes the local CA")
        return self.ssl_ca_file

    def broker_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each local broker."""
        return [(self.port + 2 * i, self.controller_port + 2 * i) for i in range(self.brokers)]

    def without_secrets(self) -> KafkaSettings:
        """The same connection without its password: what may be pickled into a job graph."""
        return self.model_copy(update={"sasl_password": None})


class KafkaAddress(str):
    """Kafka bootstrap servers (``host:port[,host:port]``) that carry their connection's security.

    It is the plain address wherever it is printed, compared or passed on; ``connection`` holds the
    KafkaSettings that every client configuration is derived from
    (connectors.kafka_io.client_config, connectors.flink_kafka.client_properties), so a function
    handed ``settings.bootstrap_servers`` cannot forget the login. A plain ``str`` is a PLAINTEXT
    connection to that address. Pickled (e.g. inside a job graph) it keeps the address, protocol
    and files but drops the password.
    """

    connection: KafkaSettings

    def __new__(cls, connection: KafkaSettings) -> KafkaAddress:
        made = super().__new__(cls, connection.bootstrap_servers)
        made.connection = connection
        return made

    @classmethod
    def of(cls, value: str | KafkaSettings) -> KafkaAddress:
        """``value`` as a KafkaAddress: itself, a KafkaSettings' address, or a plain str as PLAINTEXT."""
        if isinstance(value, KafkaAddress):
            return value
        if isinstance(value, KafkaSettings):
            return cls(value)
        if isinstance(value, str):
            return cls(KafkaSettings(bootstrap_servers=value))
        raise TypeError(f"expected Kafka bootstrap servers (str or KafkaSettings), got {type(value).__name__}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (KafkaAddress, (self.connection.without_secrets(),))

    def __copy__(self) -> KafkaAddress:
        return self

    def __deepcopy__(self, _memo: Any) -> KafkaAddress:
        return self

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            cls.of, serialization=core_schema.plain_serializer_function_ser_schema(str))


class S3Settings(Section):
    """The S3-compatible object store (s3proxy locally, MinIO on a cluster)."""

    endpoint: str = Field("", description="S3 endpoint URL (default: the local s3proxy, http://<host>:<s3.port>)")
    port: int = Field(9000, ge=1, le=65535, description="port of the local s3proxy (stack)")
    bucket: str = Field("vigil", description="bucket the local stack creates")
    region: str = Field("us-east-1", description="region name sent to the store")
    access_key: SecretStr | None = Field(None, description="S3 access key (default: generated at setup)")
    secret_key: SecretStr | None = Field(None, description="S3 secret key (default: generated at setup)")

    def without_credentials(self) -> S3Settings:
        """This store's address only: what may be pickled into a job graph."""
        return self.model_copy(update={"access_key": None, "secret_key": None})

    def with_worker_credentials(self) -> S3Settings:
        """The keys filled in from this process's own settings (environment, config, setup's file).

        Called inside a Flink worker: the job ships the store's address, the TaskManager's
        environment (or the local stack's secrets folder) provides the keys.
        """
        if self.access_key and self.secret_key:
            return self
        own = VigilSettings.load().s3
        return self.model_copy(update={"access_key": own.access_key, "secret_key": own.secret_key})

    def require_credentials(self) -> tuple[str, str]:
        if not (self.access_key and self.secret_key):
            raise SettingsError("no S3 credentials: set VIGIL_S3_ACCESS_KEY and VIGIL_S3_SECRET_KEY, or run "
                                "`python -m stack setup`, which generates them for the local stack")
        return self.access_key.get_secret_value(), self.secret_key.get_secret_value()


class MqttSettings(Section):
    """The MQTT broker devices publish to."""

    host: str = Field("", description="MQTT broker host (default: <host>)")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    username: str | None = Field(None, description="MQTT user: the bridge logs in with it, and the local "
                                                   "Mosquitto then accepts only this user (password file)")
    password: SecretStr | None = Field(None, description="MQTT password (with username)")

    @model_validator(mode="after")
    def _login_complete(self) -> MqttSettings:
        if bool(self.username) != bool(self.password and self.password.get_secret_value()):
            raise ValueError("mqtt.username and mqtt.password are set together (or neither: anonymous)")
        return self


class PrometheusSettings(Section):
    """The local Prometheus server that scrapes the Flink JVMs' metric reporters."""

    port: int = Field(9090, ge=1, le=65535, description="port of the local Prometheus server")


class FlinkSettings(Section):
    """How jobs reach Flink and how the local Flink home is rendered."""

    # The container scripts read further VIGIL_FLINK_* variables of their own (docker/).
    model_config = ConfigDict(frozen=True, extra="ignore")

    rest_port: int = Field(8081, ge=1, le=65535, description="REST port of the local standalone cluster")
    rest_ssl: bool = Field(False, description="serve Flink's REST API (web UI, flink run) over https with the "
                                              "local certificate (<home>/secrets/tls, made by setup)")
    profile: str = Field("local", description="flink-conf overlay: local (one machine) or cluster")
    conf_overlays: str = Field("", description="further flink-conf overlays, comma-separated (e.g. gpu)")


class ModelSettings(Section):
    """Where trained models are published and read."""

    store: str = Field("", description="model store: a path, file:// URI or s3://bucket/prefix "
                                       "(default: <home>/models)")


class PseudonymSettings(Section):
    """The secret behind entity-id pseudonyms (HMAC key)."""

    secret: SecretStr | None = Field(None, description="the secret itself (prefer the file)")
    secret_file: Path | None = Field(None, description="file holding the secret (default: "
                                                       "<home>/secrets/pseudonym.key, made by setup)")

    def check_readable(self) -> None:
        """Raise SettingsError unless a worker on this machine could read the secret."""
        read_pseudonym_secret(self.secret_file, secret=self.secret)


class VigilSettings(BaseSettings):
    """The whole system's settings; one instance per process, built at its entry point."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_nested_delimiter="_", env_nested_max_split=1,
                                      frozen=True, extra="ignore", case_sensitive=False)

    home: Path = Field(PROJECT_ROOT / ".vigil", description="folder of all local state (VIGIL_HOME)")
    host: str = Field("127.0.0.1", description="address the local services listen on (loopback)")
    tier: str = Field("", description="object tier for Parquet history: file:///path or s3a://bucket/prefix; "
                                      "'none' disables it (default: <home>/tier/<input topic>, each topic's "
                                      "history in a folder of its own)")
    kafka: KafkaSettings = KafkaSettings()
    s3: S3Settings = S3Settings()
    mqtt: MqttSettings = MqttSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    flink: FlinkSettings = FlinkSettings()
    model: ModelSettings = ModelSettings()
    pseudonym: PseudonymSettings = PseudonymSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config = os.environ.get(CONFIG_ENV) if _CONFIG_FILE[0] is None else _CONFIG_FILE[0]
        if config:
            path = Path(config)
            if not path.is_file():
                raise SettingsError(f"config file {path} does not exist")
            if path.suffix.lower() == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            elif path.suffix.lower() in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                raise SettingsError(f"config file {path}: use .toml or .yaml")
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _derive_defaults(cls, data: Any) -> Any:
        """Fill the defaults that follow from other values (addresses from ports, folders from home)."""
        if not isinstance(data, dict):
            return data
        data = {k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in data.items()}
        home = Path(data.get("home") or PROJECT_ROOT / ".vigil").expanduser()
        host = data.get("host") or "127.0.0.1"
        kafka = dict(data.get("kafka") or {})
        s3 = dict(data.get("s3") or {})
        mqtt = dict(data.get("mqtt") or {})
        model = dict(data.get("model") or {})
        pseudonym = dict(data.get("pseudonym") or {})
        kafka.setdefault("bootstrap_servers", "")
        if not kafka["bootstrap_servers"]:
            try:
                port, brokers = int(kafka.get("port") or 9092), int(kafka.get("brokers") or 1)
                kafka["bootstrap_servers"] = ",".join(f"{host}:{port + 2 * i}" for i in range(max(1, brokers)))
            except (TypeError, ValueError):  # a bad port or count: its own validation error names it
                kafka["bootstrap_servers"] = f"{host}:{kafka.get('port')}"
        if not (kafka.get("sasl_username") or kafka.get("sasl_password")):
            login = _read_json_secret(home, KAFKA_CREDENTIALS_FILE, ("username", "password"))
            if login:
                kafka["sasl_username"], kafka["sasl_password"] = login
        if not kafka.get("ssl_ca_file"):
            kafka["ssl_ca_file"] = home / "secrets" / TLS_DIR / "ca.pem"
        if not kafka.get("sasl_secret_file"):
            kafka["sasl_secret_file"] = home / "secrets" / "kafka-sasl.properties"
        if not s3.get("endpoint"):
            s3["endpoint"] = f"http://{host}:{s3.get('port') or 9000}"
        if not (s3.get("access_key") and s3.get("secret_key")):
            generated = _read_s3_credentials(home)
            if generated:
                s3["access_key"] = s3.get("access_key") or generated[0]
                s3["secret_key"] = s3.get("secret_key") or generated[1]
        if not mqtt.get("host"):
            mqtt["host"] = host
        if not model.get("store"):
            model["store"] = (home / "models").as_uri()
        if not pseudonym.get("secret_file"):
            pseudonym["secret_file"] = home / "secrets" / "pseudonym.key"
        return {**data, "home": home, "host": host, "tier": data.get("tier") or "", "kafka": kafka, "s3": s3,
                "mqtt": mqtt, "model": model, "pseudonym": pseudonym}

    # --- building -----------------------------------------------------------------------------
    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, *, config_file: str | Path | None = None,
             ) -> VigilSettings:
        """Settings from ``overrides`` (nested dict or ``"section.field"`` keys), environment, config file.

        Raises SettingsError with one line naming the bad value.
        """
        nested: dict[str, Any] = {}
        for key, value in (overrides or {}).items():
            _set_path(nested, key, value)
        _CONFIG_FILE[0] = str(config_file) if config_file else None
        try:
            return cls(**nested)
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc)) from None
        finally:
            _CONFIG_FILE[0] = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> VigilSettings:
        """Settings with the ``VIGIL_*`` entries of ``environ`` winning (e.g. a container's environment)."""
        sections = {name: field.annotation for name, field in cls.model_fields.items()
                    if isinstance(field.default, BaseModel)}
        overrides: dict[str, Any] = {}
        for key, value in environ.items():
            if not key.upper().startswith("VIGIL_") or not value:
                continue
            name = key[len("VIGIL_"):].lower()
            head, _, rest = name.partition("_")
            if head in sections and rest in sections[head].model_fields:
                overrides[f"{head}.{rest}"] = value
            elif name in cls.model_fields and name not in sections:
                overrides[name] = value
        return cls.load(overrides)

    def evolve(self, **changes: Any) -> VigilSettings:
        """A copy with ``changes`` applied (keys may be ``"section__field"``), validated again."""
        data = self.model_dump()
        for key, value in changes.items():
            _set_path(data, key.replace("__", "."), value)
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise SettingsError(describe_validation_error(exc)) from None

    # --- derived values -------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> KafkaAddress:
        """The Kafka address with its security attached (a str; see KafkaAddress)."""
        return KafkaAddress(self.kafka)

    @property
    def model_store(self) -> str:
        return self.model.store

    def tier_for(self, topic: str) -> str | None:
        """The object tier of a job reading ``topic``: the one set, else ``<home>/tier/<topic>`` (one
        folder per topic: Parquet files of different schemas never share one); None when disabled."""
        if self.tier.lower() == "none":
            return None
        return self.tier or (self.home / "tier" / topic).as_uri()

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def flink_home(self) -> Path:
        return self.home / "flink"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    def s3_for(self, *uris: str | None) -> S3Settings | None:
        """The S3 settings (address only, no keys) when any of ``uris`` is on S3, else None."""
        if any(str(u or "").startswith(("s3://", "s3a://")) for u in uris):
            return self.s3.without_credentials()
        return None


_CONFIG_FILE: list[str | None] = [None]  # the config file of the load() in progress


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: ``kafka.port: Input should be ... (got 'x')``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "settings"
        got = error.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        parts.append(f"{where}: {error['msg']}{shown}")
    return "; ".join(parts)


def _read_s3_credentials(home: Path) -> tuple[str, str] | None:
    return _read_json_secret(home, S3_CREDENTIALS_FILE, ("access_key", "secret_key"))


def _read_json_secret(home: Path, name: str, keys: tuple[str, str]) -> tuple[str, str] | None:
    path = home / "secrets" / name
    try:
        data = json.loads(path.read_text())
        return str(data[keys[0]]), str(data[keys[1]])
    except (OSError, ValueError, KeyError):
        return None


def write_secret_file(path: Path, text: str, *, private_dir: bool = False) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600); ``private_dir``: the folder too (0700)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if private_dir:
        os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def read_pseudonym_secret(secret_file: str | Path | None, *, secret: SecretStr | None = None) -> bytes:
    """The pseudonymisation secret as bytes.

    First found: ``secret`` (given explicitly); ``VIGIL_PSEUDONYM_SECRET`` in this process's
    environment; the job's ``secret_file``; the file ``VIGIL_PSEUDONYM_SECRET_FILE`` names (a
    TaskManager's own copy where the job's path does not exist). Raises SettingsError naming what
    is missing.
    """
    if secret is not None and secret.get_secret_value():
        return secret.get_secret_value().encode()
    value = os.environ.get(PSEUDONYM_SECRET_ENV)
    if value:
        return value.encode()
    candidates = [Path(p) for p in (secret_file, os.environ.get(PSEUDONYM_SECRET_FILE_ENV)) if p]
    for path in candidates:
        if path.is_file():
            text = path.read_text().strip()
            if not text:
                raise SettingsError(f"the pseudonymisation secret file {path} is empty")
            return text.encode()
    where = " or ".join(str(p) for p in candidates) or "no secret file is configured"
    raise SettingsError(f"no pseudonymisation secret: {where} does not exist and {PSEUDONYM_SECRET_ENV} is not "
                        f"set (`python -m stack setup` creates {Path('<home>/secrets/pseudonym.key')})")
