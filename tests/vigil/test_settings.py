"""One settings model: sources in order (flags, environment, config file, defaults), secrets kept secret."""
from __future__ import annotations

import json
import os

import pytest
from pydantic import SecretStr

from vigil.settings import SettingsError, VigilSettings, read_pseudonym_secret


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("VIGIL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("VIGIL_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_defaults_follow_from_home_host_and_ports(clean_env, tmp_path):
    s = VigilSettings.load()
    home = tmp_path / "home"
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.s3.endpoint == "http://127.0.0.1:9000"
    assert s.model_store == (home / "models").as_uri()
    # each topic's Parquet history in a folder of its own, unless a tier is set
    assert s.tier_for("plant-a") == (home / "tier" / "plant-a").as_uri()
    assert s.evolve(tier="s3a://vigil/tier").tier_for("plant-a") == "s3a://vigil/tier"
    assert s.pseudonym.secret_file == home / "secrets" / "pseudonym.key"
    clean_env.setenv("VIGIL_KAFKA_PORT", "19092")
    assert VigilSettings.load().bootstrap_servers == "127.0.0.1:19092"


def test_flags_beat_environment_beat_config_file_beat_defaults(clean_env, tmp_path):
    config = tmp_path / "vigil.toml"
    config.write_text('tier = "none"\n[kafka]\nbootstrap_servers = "from-file:1"\n[model]\nstore = "s3://file/m"\n')
    s = VigilSettings.load(config_file=config)
    assert (s.bootstrap_servers, s.model_store, s.tier_for("t")) == ("from-file:1", "s3://file/m", None)
    clean_env.setenv("VIGIL_KAFKA_BOOTSTRAP_SERVERS", "from-env:2")
    assert VigilSettings.load(config_file=config).bootstrap_servers == "from-env:2"
    s = VigilSettings.load({"kafka.bootstrap_servers": "from-flag:3"}, config_file=config)
    assert (s.bootstrap_servers, s.model_store) == ("from-flag:3", "s3://file/m")
    yaml_config = tmp_path / "vigil.yaml"
    yaml_config.write_text("model:\n  store: file:///from/yaml\n")
    clean_env.setenv("VIGIL_CONFIG", str(yaml_config))
    assert VigilSettings.load().model_store == "file:///from/yaml"


@pytest.mark.parametrize("text, named", [
    ("[kafka]\nport = 'abc'\n", "kafka.port"),
    ("[kafka]\nbootstrap = 'x:1'\n", "kafka.bootstrap"),   # a typo is refused, not ignored
    ("[s3]\nport = 70000\n", "s3.port"),
])
def test_bad_config_is_one_line_naming_the_setting(clean_env, tmp_path, text, named):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as info:
        VigilSettings.load(config_file=config)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_missing_config_file_is_named(clean_env, tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        VigilSettings.load(config_file=tmp_path / "nope.toml")


def test_secrets_never_show(clean_env, tmp_path):
    (tmp_path / "home" / "secrets").mkdir(parents=True)
    (tmp_path / "home" / "secrets" / "s3.json").write_text(json.dumps({"access_key": "ak-1", "secret_key": "sk-xyz"}))
    clean_env.setenv("VIGIL_PSEUDONYM_SECRET", "pepper-123")
    s = VigilSettings.load()
    assert s.s3.require_credentials() == ("ak-1", "sk-xyz")
    shown = repr(s) + str(s) + s.model_dump_json()
    assert "sk-xyz" not in shown and "pepper-123" not in shown
    # what a job ships to its workers has the store's address only
    assert s.s3.without_credentials().secret_key is None
    assert s.s3.without_credentials().with_worker_credentials().require_credentials() == ("ak-1", "sk-xyz")


def test_pseudonym_secret_sources_in_order(clean_env, tmp_path):
    job_file = tmp_path / "job.key"
    job_file.write_text("from-job-file\n")
    own_file = tmp_path / "own.key"
    own_file.write_text("from-taskmanager-file")
    assert read_pseudonym_secret(job_file) == b"from-job-file"
    clean_env.setenv("VIGIL_PSEUDONYM_SECRET_FILE", str(own_file))
    assert read_pseudonym_secret(tmp_path / "not-on-this-machine.key") == b"from-taskmanager-file"
    clean_env.setenv("VIGIL_PSEUDONYM_SECRET", "from-env")
    assert read_pseudonym_secret(job_file) == b"from-env"
    assert read_pseudonym_secret(job_file, secret=SecretStr("given")) == b"given"
    clean_env.delenv("VIGIL_PSEUDONYM_SECRET")
    clean_env.delenv("VIGIL_PSEUDONYM_SECRET_FILE")
    with pytest.raises(SettingsError, match="no pseudonymisation secret"):
        read_pseudonym_secret(tmp_path / "missing.key")


def test_settings_are_frozen(clean_env):
    s = VigilSettings.load()
    with pytest.raises(Exception):
        s.kafka.port = 1  # type: ignore[misc]
    assert s.evolve(flink__rest_port=18081).flink.rest_port == 18081
