"""The dashboard: its aggregation (exact, bounded), and the page in a real browser on real topics.

The unit tests feed :class:`jobs.dashboard.DashboardState` records shaped exactly as the record
contract says (connectors/records.py). The end-to-end test produces such records as JSON into fresh
topics on the real broker, runs ``python -m jobs.dashboard`` against them and the session's trained
model registry, and reads the page in headless Chromium (Debian's package, ``make setup`` installs
it): once with ``--dump-dom``, and once driven by ChromeDriver to see the open page update itself.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from connectors.avro_serde import load_schema
from connectors.records import STAGES, outputs
from jobs import dashboard
from jobs.dashboard import DashboardError, DashboardState, Fields, ThresholdCache
from vigil.settings import PROJECT_ROOT

OUT = outputs(load_schema())
FIELDS = Fields.of(OUT)
T0 = 1_796_000_040_000 - 1_796_000_040_000 % 60_000  # a whole minute (arrival clock, epoch ms)
V1, V2 = "telemetry@1", "telemetry@2"


def pseudonym(n: int) -> str:
    return "p-" + f"{n:020x}"


def iso(seconds: float) -> str:
    """Event time as Flink's json format writes it (ISO-8601, no zone: UTC)."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_767_225_600 + seconds))  # from 2026-01-01
    return f"{whole}.{int(seconds * 1000) % 1000:03d}"


def scored(entity: str, seconds: float, score: float, anomalous: bool, version: str = V1,
           label: str | None = None, offset: int = 0) -> dict[str, Any]:
    """A scored record with every field of the contract (the readings' features left null)."""
    record: dict[str, Any] = dict.fromkeys(OUT.scored.names)
    record.update({OUT.entity: entity, OUT.time: iso(seconds), OUT.label: label, "score": score,
                   "is_anomaly": anomalous, "model_version": version, "source_partition": 0, "source_offset": offset})
    assert list(record) == OUT.scored.names
    return record


def alert(entity: str, seconds: float, score: float, version: str = V1, label: str | None = None,
          offset: int = 0, status: str = "open") -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(OUT.alerts.names)
    reading = {"event_time": iso(seconds), "score": score, "source_partition": 0, "source_offset": offset,
               "label": label}
    record.update({OUT.entity: entity, OUT.time: iso(seconds), "score": score, "model_version": version,
                   OUT.label: label, "source_partition": 0, "source_offset": offset, "anomalies": 1,
                   "episode_id": f"{entity}:0:{offset}", "status": status, "first_event_time": iso(seconds),
                   "last_event_time": iso(seconds), "ended_at": iso(seconds + 1) if status == "closed" else None,
                   "max_score": score, "readings": [reading]})
    assert list(record) == OUT.alerts.names
    return record


def dead_letter(reason: str, offset: int, topic: str = "telemetry") -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(OUT.dead_letters.names)
    record.update({"reason": reason, "stage": reason.split(":")[0], "source_topic": topic, "source_partition": 1,
                   "source_offset": offset, "source_timestamp": "2026-01-01T00:00:00Z",
                   "key_pseudonym": pseudonym(999), "payload": base64.b64encode(b"sealed").decode(),
                   "payload_bytes": 20, "payload_sha256": "0" * 64, "payload_truncated": False, "model_version": None})
    assert list(record) == OUT.dead_letters.names
    return record


# --- the aggregation, without Kafka ---------------------------------------------------------------

def test_the_state_computes_the_feed_series_rates_reasons_and_versions_exactly():
    a, b, c = pseudonym(1), pseudonym(2), pseudonym(3)
    state = DashboardState(FIELDS)
    minute0, minute1 = T0 + 5_000, T0 + 65_000
    first = [(a, 0.02, False), (a, 0.9, True), (b, 0.03, False), (c, 0.01, False)]
    for n, (entity, score, anomalous) in enumerate(first):
        state.add("scored", scored(entity, 10 + n, score, anomalous, V1, offset=n), minute0)
    state.add("scored", scored(a, 20, 0.05, False, V2, label="tire_leak"), minute1)
    state.add("scored", scored(b, 21, 0.7, True, V2), minute1)
    state.add("dlq", dead_letter("undecodable: cannot decode 20 bytes", 7), minute0)
    state.add("dlq", dead_letter("validation_failed: expect_column_values_to_be_between(coolant_temp_c)", 8), minute1)
    # alerts arrive out of event-time order: the feed is newest event time first
    state.add("alerts", alert(b, 21, 0.7, V2), minute1)
    state.add("alerts", alert(a, 11, 0.9, V1, label="coolant_overheat", offset=1), minute0)
    # the episode's close updates its row: still one alert, now closed, with its peak and count
    state.add("alerts", {**alert(a, 11, 0.4, V1, label="coolant_overheat", offset=1, status="closed"),
                         "anomalies": 3, "max_score": 1.2, "source_offset": 4}, minute1)

    snap = state.snapshot(thresholds={V1: 0.5, V2: 0.6})

    assert [(x["entity"], x["event_time"], x["score"], x["label"], x["model_version"]) for x in snap["alerts"]] == [
        (b, iso(21), 0.7, None, V2), (a, iso(11), 0.4, "coolant_overheat", V1)]
    assert snap["alerts"][1]["source"] == "p0@1"
    assert [(x["status"], x["anomalies"], x["max_score"]) for x in snap["alerts"]] == [
        ("open", 1, 0.7), ("closed", 3, 1.2)]
    assert snap["alerts"][1]["ended_at"] == iso(12)
    assert snap["default_entity"] == b  # the entity of the newest alert
    assert snap["entity"]["entity"] == b
    assert snap["entity"]["series"] == [[dashboard.epoch_ms(iso(12)), 0.03, False, V1, None],
                                        [dashboard.epoch_ms(iso(21)), 0.7, True, V2, None]]
    assert snap["entity"]["thresholds"] == {V1: 0.5, V2: 0.6}
    series_a = state.snapshot(a, {V1: 0.5})["entity"]
    assert [(r[1], r[2], r[3], r[4]) for r in series_a["series"]] == [
        (0.02, False, V1, None), (0.9, True, V1, None), (0.05, False, V2, "tire_leak")]
    assert series_a["thresholds"] == {V1: 0.5, V2: None}
    assert (series_a["scored"], series_a["anomalies"], series_a["alerts"]) == (3, 1, 1)
    assert state.snapshot("unknown")["entity"]["entity"] == b  # an unknown pick falls back to the default
    assert [e["entity"] for e in snap["entities"]] == [b, a, c]  # by their latest alert, then the rest

    assert snap["rates"] == {"clock": "arrival", "minutes": [
        {"minute_ms": T0, "scored": 4, "anomalies": 1, "dead_letters": 1, "anomaly_rate": 0.25,
         "dead_letter_rate": 0.2},
        {"minute_ms": T0 + 60_000, "scored": 2, "anomalies": 1, "dead_letters": 1, "anomaly_rate": 0.5,
         "dead_letter_rate": 1 / 3}]}
    assert snap["dead_letters"]["by_stage"] == {**dict.fromkeys(STAGES, 0), "undecodable": 1, "validation_failed": 1}
    assert [(r["reason"], r["stage"], r["source"]) for r in snap["dead_letters"]["latest"]] == [
        ("validation_failed: expect_column_values_to_be_between(coolant_temp_c)", "validation_failed",
         "telemetry p1@8"),
        ("undecodable: cannot decode 20 bytes", "undecodable", "telemetry p1@7")]
    assert snap["versions"] == [
        {"model_version": V1, "scored": 4, "anomalies": 1, "threshold": 0.5, "first_arrival_ms": minute0,
         "last_arrival_ms": minute0},
        {"model_version": V2, "scored": 2, "anomalies": 1, "threshold": 0.6, "first_arrival_ms": minute1,
         "last_arrival_ms": minute1}]
    assert snap["totals"] == {"scored": 6, "anomalies": 2, "alerts": 2, "dead_letters": 2, "malformed": 0,
                              "entities": 3, "last_arrival_ms": minute1}
    json.dumps(snap, allow_nan=False)  # what the server sends


def test_memory_stays_bounded_whatever_the_topics_hold():
    state = DashboardState(FIELDS, readings_per_entity=300, max_entities=50, alerts_kept=20, minutes=10)
    one = pseudonym(1)
    state.add_many(("scored", scored(one, n, 0.01, False), T0 + n) for n in range(100_000))
    assert state.readings_of(one) == 300
    series = state.snapshot(one)["entity"]["series"]
    assert len(series) == 300 and series[-1][0] == dashboard.epoch_ms(iso(99_999))  # the latest readings
    # entities: the least recently seen go first
    state.add_many(("scored", scored(pseudonym(n), 0, 0.01, False), T0) for n in range(2, 200))
    snap = state.snapshot()
    assert snap["totals"]["entities"] == 50 and state.readings_of(one) == 0
    assert state.readings_of(pseudonym(199)) == 1
    # alerts: only the newest event times are kept, whatever the order they arrive in
    state.add_many(("alerts", alert(pseudonym(500), s, 1.0, offset=s), T0) for s in [*range(1000, 0, -1), *range(1001, 1500)])
    feed = state.snapshot()["alerts"]
    assert [x["event_time"] for x in feed] == [iso(s) for s in range(1499, 1479, -1)]
    # minutes: the newest are kept; a record older than all of them counts in the totals only
    state.add_many(("dlq", dead_letter("undecodable: x", n), T0 + n * 60_000) for n in range(30))
    state.add("dlq", dead_letter("unscorable: late", 99), T0)
    minutes = state.snapshot()["rates"]["minutes"]
    assert [m["minute_ms"] for m in minutes] == [T0 + n * 60_000 for n in range(20, 30)]
    assert state.snapshot()["totals"]["dead_letters"] == 31
    assert len(state.snapshot()["dead_letters"]["latest"]) == dashboard.REASONS_KEPT
    # versions and stages: at most MAX_KEYS distinct, the rest counted as "other"
    state.add_many(("scored", scored(one, 0, 0.1, False, version=f"m@{n}"), T0) for n in range(200))
    versions = {v["model_version"]: v["scored"] for v in state.snapshot()["versions"]}
    assert len(versions) == dashboard.MAX_KEYS + 1  # V1, m@0 .. m@48, other
    assert versions["other"] == 200 - (dashboard.MAX_KEYS - 1) and "m@48" in versions and "m@49" not in versions


def test_bad_records_are_counted_never_fatal():
    state = DashboardState(FIELDS)
    state.add("scored", None)                                   # not JSON
    state.add("scored", ["not", "an", "object"])
    state.add("scored", {**scored(pseudonym(1), 0, 0.1, False), "score": "high"})
    state.add("alerts", {"score": 1.0})                         # hardly anything: still an alert
    state.add("scored", {**scored(pseudonym(2), 0, 0.1, False), "score": float("nan")})
    snap = state.snapshot()
    assert snap["totals"]["malformed"] == 3 and snap["totals"]["alerts"] == 1 and snap["totals"]["scored"] == 1
    assert snap["entity"]["series"][0][1] is None  # a NaN score is not sent as NaN (JSON has none)
    json.dumps(snap, allow_nan=False)


def test_thresholds_are_looked_up_once_per_version():
    calls: list[str] = []

    def lookup(version: str) -> float | None:
        calls.append(version)
        if version == "gone@1":
            raise RuntimeError("no such model")
        return 0.25

    cache = ThresholdCache(lookup)
    assert [cache.get(V1), cache.get(V1), cache.get("gone@1"), cache.get("gone@1")] == [0.25, 0.25, None, None]
    assert calls == [V1, "gone@1"] and cache.known() == {V1: 0.25, "gone@1": None}


def test_thresholds_come_from_the_model_registry(trained_model):
    store, manifest = trained_model
    from vigil.settings import VigilSettings

    lookup = dashboard.registry_thresholds(VigilSettings.load({"model.store": store}))
    assert lookup(manifest["version"]) == manifest["threshold"] and manifest["version"] == "telemetry@1"


def test_help_lists_every_option_with_its_default(capsys):
    assert dashboard.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [("--input", "telemetry"), ("--port", "8050"), ("--readings-per-entity", "500"),
                          ("--entities", "1000"), ("--alerts-kept", "200"), ("--minutes", "120"),
                          ("--timeout", "120.0")]:
        assert re.search(re.escape(flag) + r" \S+ [^\[]+\[default: " + re.escape(default) + r"\]", text), flag
    for flag in ("--screenshot FILE", "--bootstrap-servers", "--model-store"):
        assert flag in text


def test_bad_options_and_no_broker_are_one_line_errors(capsys):
    assert dashboard.main(["--port", "70000"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert dashboard.main(["--bootstrap-servers", "127.0.0.1:1", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Kafka broker answers at 127.0.0.1:1") and "\n" not in err


# --- the page in a real browser, on real topics ---------------------------------------------------

@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return dashboard.chromium_path()
    except DashboardError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def chromedriver() -> str:
    import shutil

    found = shutil.which("chromedriver") or next((p for p in ["/usr/bin/chromedriver"] if Path(p).is_file()), None)
    if not found:
        pytest.fail("ChromeDriver is not installed (no chromedriver on PATH); `make setup` installs it "
                    "(Debian package chromium-driver)", pytrace=False)
    return found


class WebDriver:
    """Just enough of the W3C WebDriver protocol (over ChromeDriver's HTTP) to watch one open page."""

    def __init__(self, driver: str, chromium: str, profile: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("ChromeDriver did not become ready within 30 s")
            time.sleep(0.2)
        options = {"binary": chromium, "args": [*dashboard.CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                                "--window-size=1400,1000"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options,
                                                 "timeouts": {"pageLoad": 30_000, "script": 10_000}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def source(self) -> str:
        return self._call("GET", f"/session/{self.session}/source")

    def quit(self) -> None:
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(10)


def wait_for(check, timeout: float, what: str, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} within {timeout:.0f} s")


def produce(bootstrap: str, topic: str, records: list[tuple[str | None, dict[str, Any]]], timestamp_ms: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 0})
    for key, record in records:
        producer.produce(topic, key=key.encode() if key else None, value=json.dumps(record).encode(),
                         timestamp=timestamp_ms)
    assert producer.flush(30) == 0


def api_state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/state", timeout=10) as response:
        return json.loads(response.read())


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.kafka
def test_the_page_shows_the_outputs_and_updates_live(kafka_bootstrap, new_topic, trained_model, chromium,
                                                     chromedriver, tmp_path):
    from connectors import schema_store
    from connectors.kafka_io import create_topic

    store, manifest = trained_model
    version = manifest["version"]  # telemetry@1, with its threshold in the registry
    source = new_topic("telemetry", partitions=1)
    schema_store.register(kafka_bootstrap, source, load_schema())
    for kind in dashboard.KINDS:
        create_topic(kafka_bootstrap, f"{source}.{kind}", partitions=2)
    a, b, c = pseudonym(0xA11), pseudonym(0xB22), pseudonym(0xC33)
    now = int(time.time() * 1000)
    readings = [(e, scored(e, s, 0.02 + 0.001 * s, False, version, offset=s)) for e in (a, b, c) for s in range(30)]
    readings += [(a, scored(a, 31, 4.5, True, version, label="coolant_overheat", offset=31)),
                 (b, scored(b, 32, 2.5, True, version, offset=32))]
    produce(kafka_bootstrap, f"{source}.scored", readings[:45], now - 60_000)
    produce(kafka_bootstrap, f"{source}.scored", readings[45:], now)
    produce(kafka_bootstrap, f"{source}.alerts", [(a, alert(a, 31, 4.5, version, "coolant_overheat", 31)),
                                                  (b, alert(b, 32, 2.5, version, offset=32))], now)
    reasons = ["undecodable: cannot decode 20 bytes as VehicleTelemetry", "impossible_value: engine_rpm=nan",
               "validation_failed: expect_column_values_to_match_regex(firmware_version)"]
    produce(kafka_bootstrap, f"{source}.dlq", [(None, dead_letter(r, n, source)) for n, r in enumerate(reasons)], now)

    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "jobs.dashboard", "--input", source, "--port", "0",
                               "--bootstrap-servers", kafka_bootstrap, "--model-store", store],
                              cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # the first line, printed once the server listens
        match = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, f"unexpected first line {line!r}; stderr: {server.stderr.read() if server.poll() else ''}"
        url = match.group(1)
        def read_all() -> dict[str, Any] | None:
            state = api_state(url)
            totals = state["totals"]
            done = totals["scored"] == 92 and totals["alerts"] == 2 and totals["dead_letters"] == 3
            return state if done and state["versions"][0]["threshold"] is not None else None

        state = wait_for(read_all, 60, "the dashboard did not read the topics (and the threshold)")
        assert state["versions"] == [{"model_version": version, "scored": 92, "anomalies": 2,
                                      "threshold": manifest["threshold"], "first_arrival_ms": now - 60_000,
                                      "last_arrival_ms": now}]
        assert [m["scored"] for m in state["rates"]["minutes"]] == [45, 47]

        # 1. a fresh page, as the browser renders it after its scripts ran
        dom = dashboard.dump_dom(url, budget_ms=5000, timeout=60)
        for text in (a, b, source, "coolant_overheat", f"threshold {version}", *reasons):
            assert text in dom, f"{text!r} is not on the page"
        assert int(re.search(r'data-polls="(\d+)"', dom).group(1)) >= 2  # it polls, not just loads

        # 2. the open page updates itself: a new alert appears without reloading it
        with tempfile.TemporaryDirectory(prefix="vigil-webdriver-") as profile:
            browser = WebDriver(chromedriver, chromium, profile)
            try:
                browser.open(url)
                wait_for(lambda: b in browser.source(), 30, "the alerts did not appear in the browser")
                late = pseudonym(0xD44)
                assert late not in browser.source()
                produce(kafka_bootstrap, f"{source}.scored", [(late, scored(late, 40, 9.0, True, version))],
                        int(time.time() * 1000))
                produce(kafka_bootstrap, f"{source}.alerts", [(late, alert(late, 40, 9.0, version, "tire_leak"))],
                        int(time.time() * 1000))
                page = wait_for(lambda: (lambda s: s if late in s else None)(browser.source()), 30,
                                "the open page did not show the new alert")
                feed = re.search(r'<table id="alerts">.*?</table>', page, re.S).group(0)
                assert re.findall(r'data-entity="(p-[0-9a-f]{20})"', feed) == [late, b, a]  # newest on top
            finally:
                browser.quit()

        # 3. a second fresh load has it too, and the screenshot is a real picture of the page
        assert late in dashboard.dump_dom(url, timeout=60)
        shot = dashboard.screenshot(url, tmp_path / "dashboard.png", timeout=60)
        data = shot.read_bytes()
        assert png_size(data) == (1400, 1000) and len(data) > 30_000
        from PIL import Image

        with Image.open(shot) as image:
            assert len(image.convert("RGB").getcolors(1 << 20)) > 200  # text, charts: not a blank page
        print(f"\nend to end: {time.monotonic() - started:.1f} s from starting the dashboard")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            assert server.wait(20) == 0  # Ctrl-C stops it cleanly
        finally:
            if server.poll() is None:
                server.kill()
            server.stdout.close()
            server.stderr.close()


@pytest.mark.kafka
def test_screenshot_option_renders_and_exits(kafka_bootstrap, new_topic, chromium, tmp_path, capsys):
    from connectors.kafka_io import create_topic

    source = new_topic("telemetry", partitions=1)
    create_topic(kafka_bootstrap, f"{source}.alerts", partitions=1)  # the other two outputs do not exist
    produce(kafka_bootstrap, f"{source}.alerts", [(pseudonym(7), alert(pseudonym(7), 1, 3.0))],
            int(time.time() * 1000))
    shot = tmp_path / "shot.png"
    assert dashboard.main(["--input", source, "--port", "0", "--bootstrap-servers", kafka_bootstrap,
                           "--screenshot", str(shot), "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^dashboard: http://127\.0\.0\.1:\d+/$", out, re.M) and f"screenshot: {shot}" in out
    assert png_size(shot.read_bytes()) == (1400, 1000)


@pytest.mark.kafka
def test_a_port_in_use_is_a_one_line_error(kafka_bootstrap, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert dashboard.main(["--port", str(port), "--bootstrap-servers", kafka_bootstrap,
                               "--input", f"nothing-{uuid.uuid4().hex[:6]}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "\n" not in err
