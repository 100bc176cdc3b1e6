# Vigil — one entry point for setting up, running and testing on one machine.
#
#   make demo    set up everything on a fresh machine, start the services, run the main job story
#   make test    set up everything and run the whole test suite against the real services
#   make down    stop the services (data stays under .vigil/; `make purge` deletes it)

SHELL := /bin/bash
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
VIGIL_HOME ?= $(CURDIR)/.vigil
export VIGIL_HOME

.PHONY: setup up down purge status demo test test-fast test-faults bench lock

# --- setup: Python environment + Java parts + Flink home (idempotent, stamps skip done work) ---
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

$(VIGIL_HOME)/.stack-ready: $(VENV)/.installed $(wildcard stack/maven/*/pom.xml) stack/maven/pom.xml $(wildcard flink-conf/*)
	$(PY) -m stack setup
	@touch $@

# Mosquitto comes from Debian's package (the only place it is published): root or sudo needed once.
$(VIGIL_HOME)/.mosquitto:
	@if ! command -v mosquitto >/dev/null && ! test -x /usr/sbin/mosquitto; then \
	  echo "installing mosquitto (Debian package) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto >/dev/null \
	    || { echo "error: could not install mosquitto; install it with: sudo apt-get install mosquitto" >&2; exit 1; }; \
	fi
	@mkdir -p $(VIGIL_HOME) && touch $@

# Chromium (headless, for the dashboard's browser tests and its screenshot) comes from Debian's
# packages, like Mosquitto: root or sudo needed once. chromium-driver serves the live-update test.
$(VIGIL_HOME)/.chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  echo "installing chromium and chromium-driver (Debian packages) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
	    || { echo "error: could not install chromium; install it with: sudo apt-get install chromium chromium-driver" >&2; exit 1; }; \
	fi
	@mkdir -p $(VIGIL_HOME) && touch $@

setup: $(VIGIL_HOME)/.stack-ready $(VIGIL_HOME)/.mosquitto $(VIGIL_HOME)/.chromium

up: setup
	$(PY) -m stack up kafka s3 mosquitto

down:
	@if [ -x $(PY) ]; then $(PY) -m stack down; fi

purge:
	@if [ -x $(PY) ]; then $(PY) -m stack down --purge; fi

status:
	$(PY) -m stack status

# --- the main job on the local default: simulate -> train from Kafka -> score -> summary ---
demo: up
	$(PY) -m jobs.run_demo
	@echo "Services keep running (Kafka $${VIGIL_KAFKA_PORT:-9092}, S3 $${VIGIL_S3_PORT:-9000}); stop them with: make down"

# --- tests: everything, against the real broker, S3 server and Flink mini-cluster ---
test: up
	$(PY) -m pytest tests

# the fault-injection suite alone (tests/faults/; make test runs it too, in its quick mode);
# VIGIL_FAULTS_MODE=full for 1,000,000 events
test-faults: up
	$(PY) -m pytest -m faults tests/faults -s

test-fast: setup
	$(PY) -m pytest tests -m "not kafka and not flink and not s3"

bench: up
	$(PY) -m benchmarks.score_function
	$(PY) -m benchmarks.validation_cost
	$(PY) -m benchmarks.pipeline

lock:
	rm -rf /tmp/vigil-lock && $(PYTHON_BOOT) -m venv /tmp/vigil-lock
	/tmp/vigil-lock/bin/pip install --quiet --upgrade pip
	/tmp/vigil-lock/bin/pip install --quiet -e '.[test]'
	( echo "# Exact package set for Python 3.11 (pip freeze of a fresh install of pyproject.toml + [test])."; \
	  echo "# Regenerate: make lock"; \
	  /tmp/vigil-lock/bin/pip freeze --exclude-editable | grep -v '^vigil' ) > requirements.lock

# Prometheus (the local metrics server, `python -m stack up prometheus`) comes from Debian's
# package, like Mosquitto: root or sudo needed once. The extra prerequisite adds it to `setup`.
$(VIGIL_HOME)/.prometheus:
	@if ! command -v prometheus >/dev/null && ! test -x /usr/bin/prometheus; then \
	  echo "installing prometheus (Debian package) ..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
	    || { echo "error: could not install prometheus; install it with: sudo apt-get install prometheus" >&2; exit 1; }; \
	fi
	@mkdir -p $(VIGIL_HOME) && touch $@

setup: $(VIGIL_HOME)/.prometheus

# Vigil's own Flink functions (connectors/jvm: VIGIL_DECODE, the JVM decode) as one jar in
# $(VIGIL_HOME)/jvm/target/, compiled against the installed PyFlink's Flink version. Maven runs
# offline once its artifacts are in ~/.m2 (online only the first time). The extra prerequisite adds it to `setup`.
JVM_SOURCES := connectors/jvm/pom.xml $(shell find connectors/jvm/src -type f 2>/dev/null)
$(VIGIL_HOME)/.jvm: $(VENV)/.installed $(JVM_SOURCES)
	@FLINK_VERSION=$$($(PY) -c 'from pyflink.version import __version__; print(__version__)') && \
	MVN="mvn -B -q -f connectors/jvm/pom.xml -Dvigil.build=$(VIGIL_HOME)/jvm -Dflink.version=$$FLINK_VERSION package" && \
	{ $$MVN -o 2>/dev/null || $$MVN; }
	@mkdir -p $(VIGIL_HOME) && touch $@

setup: $(VIGIL_HOME)/.jvm
