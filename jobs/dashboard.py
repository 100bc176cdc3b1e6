"""A live local dashboard of a scoring job's outputs: alerts, scores, rates, dead letters, models.

    vigil dashboard --input demo.telemetry [--port 8050]
    vigil dashboard --input demo.telemetry --screenshot docs/dashboard.png

Serves one page on the loopback host of the settings (``dashboard: http://127.0.0.1:8050/``) that
polls ``/api/state`` every 2 s while a scoring job runs. The dashboard reads ``<input>.scored``,
``<input>.alerts`` and ``<input>.dlq`` (records as connectors/records.py defines them) with its own
consumer: read_committed (only what the job committed), from the earliest offset, no consumer
group offsets committed, topics that appear later are picked up within seconds. It shows

* the alert feed: one row per alarm episode (open or closed, its anomalous readings and peak score), newest
  first (entity pseudonym, first event time, label, model);
* one entity's scores over event time with the threshold of the model version behind each score
  (from the model registry, looked up once per version), by default the entity of the newest alert;
* the anomaly rate and dead-letter rate per minute of *arrival* (the Kafka timestamp of the
  output record: when the scoring job wrote it; a dead letter has no trustworthy event time);
* dead letters by stage and the latest reasons; scored records per model version.

Memory is bounded whatever the topics hold: the latest ``--readings-per-entity`` readings of at
most ``--entities`` entities (least recently seen dropped first), the ``--alerts-kept`` newest
alerts, ``--minutes`` minute buckets, a few reasons, at most 50 model versions and stages.

``--screenshot FILE`` reads the topics up to their current end, renders the page in headless
Chromium (``make setup`` installs Debian's package) into a PNG and exits: README's picture is
``make demo`` followed by ``python -m jobs.dashboard --input demo.telemetry --screenshot
docs/dashboard.png``. ``?entity=p-...`` in the page's address picks the charted entity.
"""
# Layout: DashboardState is the aggregation, a pure class fed parsed records (no Kafka);
# follow_outputs() the consumer loop feeding it; make_server() the HTTP part; Dashboard ties them
# together (Dashboard(settings, options).start(), .url, .wait_caught_up(), .stop()).
from __future__ import annotations

import datetime as dt
import heapq
import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from connectors.errors import ConnectorError
from connectors.records import STAGES, Outputs, outputs
from vigil.commands import Options, command, option
from vigil.settings import VigilSettings

PAGE_DIR = Path(__file__).resolve().parent / "dashboard_page"
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/index.html": ("index.html", "text/html; charset=utf-8"),
              "/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/style.css": ("style.css", "text/css; charset=utf-8")}
KINDS = ("scored", "alerts", "dlq")  # the output topics are <input>.<kind>
MAX_KEYS = 50          # distinct model versions / dead-letter stages counted; the rest as "other"
REASONS_KEPT = 8       # latest dead-letter reasons shown
ENTITIES_SENT = 300    # entities offered in the page's picker
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--hide-scrollbars", "--mute-audio")


class DashboardError(RuntimeError):
    """The dashboard cannot serve or render (port taken, Chromium missing); the message says which."""


@dataclass(frozen=True)
class Fields:
    """The column names that vary with the input topic's schema (from the record contract)."""

    entity: str               # <entity>_pseudonym
    time: str | None          # the event-time column, if the schema has one
    label: str | None         # the label column, if the schema has one

    @classmethod
    def of(cls, out: Outputs) -> Fields:
        return cls(out.entity, out.time, out.label)


def epoch_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of a JSON timestamp (ISO-8601 text, naive = UTC, or a number)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def _finite(value: Any) -> float | None:
    """A score as a float, or None when missing or not finite (JSON has no NaN)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _capped(counter: Counter[str], key: str | None, n: int = 1) -> str:
    """Count ``key`` in ``counter``, folding new keys beyond MAX_KEYS into "other" (bounded);
    returns the key counted."""
    key = key if key is not None else "(none)"
    if key not in counter and len(counter) >= MAX_KEYS:
        key = "other"
    counter[key] += n
    return key


@dataclass
class _Entity:
    readings: deque[tuple[int | None, float | None, bool, str | None, str | None]]
    scored: int = 0
    anomalies: int = 0
    alerts: int = 0
    last_alert_ms: int | None = None


@dataclass
class _Minute:
    scored: int = 0
    anomalies: int = 0
    dead_letters: int = 0


class DashboardState:
    """What the page shows, aggregated from a scoring job's output records; bounded and thread-safe.

    Feed it parsed JSON records with :meth:`add` (or the ``add_*`` methods) and the Kafka timestamp
    they arrived with; :meth:`snapshot` returns the page's JSON. Every structure has a cap (see
    the constructor), so memory does not grow with the topics.
    """

    def __init__(self, fields: Fields, *, readings_per_entity: int = 500, max_entities: int = 1000,
                 alerts_kept: int = 200, minutes: int = 120) -> None:
        for name, value in (("readings_per_entity", readings_per_entity), ("max_entities", max_entities),
                            ("alerts_kept", alerts_kept), ("minutes", minutes)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.fields = fields
        self.readings_per_entity = readings_per_entity
        self.max_entities = max_entities
        self.alerts_kept = alerts_kept
        self.minutes_kept = minutes
        self._lock = threading.Lock()
        self._entities: OrderedDict[str, _Entity] = OrderedDict()  # least recently seen first
        self._alerts: list[tuple[int, int, dict[str, Any]]] = []    # min-heap of (event ms, seq, alert)
        self._episodes: dict[str, dict[str, Any]] = {}              # episode_id -> its alert in the feed
        self._minutes: dict[int, _Minute] = {}
        self._versions: Counter[str] = Counter()
        self._version_anomalies: Counter[str] = Counter()
        self._version_seen: dict[str, list[int]] = {}               # first and last arrival
        self._stages: Counter[str] = Counter({s: 0 for s in STAGES})
        self._reasons: deque[dict[str, Any]] = deque(maxlen=REASONS_KEPT)
        self._seq = 0
        self.totals = Counter(scored=0, anomalies=0, alerts=0, dead_letters=0, malformed=0)
        self.last_arrival_ms: int | None = None
        self.status: dict[str, Any] = {"caught_up": False, "missing_topics": [], "error": None}

    # --- feeding ---------------------------------------------------------------------------------
    def add(self, kind: str, record: Any, arrival_ms: int | None = None) -> None:
        """Count one record of output ``kind`` (scored, alerts or dlq); a non-object is malformed."""
        self.add_many([(kind, record, arrival_ms)])

    def add_many(self, items: Iterable[tuple[str, Any, int | None]]) -> None:
        adders = {"scored": self._add_scored, "alerts": self._add_alert, "dlq": self._add_dead_letter}
        with self._lock:
            for kind, record, arrival_ms in items:
                if not isinstance(record, dict) or kind not in adders:
                    self.totals["malformed"] += 1
                    continue
                if arrival_ms is not None:
                    self.last_arrival_ms = max(self.last_arrival_ms or 0, arrival_ms)
                try:
                    adders[kind](record, arrival_ms)
                except (TypeError, ValueError):  # a field of the wrong type: counted, never fatal
                    self.totals["malformed"] += 1

    def add_scored(self, record: dict[str, Any], arrival_ms: int | None = None) -> None:
        self.add("scored", record, arrival_ms)

    def add_alert(self, record: dict[str, Any], arrival_ms: int | None = None) -> None:
        self.add("alerts", record, arrival_ms)

    def add_dead_letter(self, record: dict[str, Any], arrival_ms: int | None = None) -> None:
        self.add("dlq", record, arrival_ms)

    def note_error(self, text: str | None) -> None:
        with self._lock:
            self.status["error"] = text

    def set_status(self, **values: Any) -> None:
        with self._lock:
            self.status.update(values)

    def _entity(self, name: str) -> _Entity:
        entity = self._entities.get(name)
        if entity is None:
            entity = self._entities[name] = _Entity(deque(maxlen=self.readings_per_entity))
            while len(self._entities) > self.max_entities:
                self._entities.popitem(last=False)
        else:
            self._entities.move_to_end(name)
        return entity

    def _minute(self, arrival_ms: int | None) -> _Minute | None:
        if arrival_ms is None:
            return None
        key = arrival_ms - arrival_ms % 60_000
        bucket = self._minutes.get(key)
        if bucket is None:
            if len(self._minutes) >= self.minutes_kept:
                oldest = min(self._minutes)
                if key < oldest:
                    return None  # older than every minute kept: only the totals count it
                del self._minutes[oldest]
            bucket = self._minutes[key] = _Minute()
        return bucket

    def _add_scored(self, record: dict[str, Any], arrival_ms: int | None) -> None:
        f = self.fields
        score = _finite(record.get("score"))
        anomalous = bool(record.get("is_anomaly"))
        version = record.get("model_version")
        self.totals["scored"] += 1
        self.totals["anomalies"] += anomalous
        counted = _capped(self._versions, version)
        if anomalous:
            self._version_anomalies[counted] += 1
        if arrival_ms is not None:
            seen = self._version_seen.setdefault(counted, [arrival_ms, arrival_ms])
            seen[0], seen[1] = min(seen[0], arrival_ms), max(seen[1], arrival_ms)
        bucket = self._minute(arrival_ms)
        if bucket is not None:
            bucket.scored += 1
            bucket.anomalies += anomalous
        name = record.get(f.entity)
        if name is not None:
            entity = self._entity(str(name))
            entity.scored += 1
            entity.anomalies += anomalous
            label = record.get(f.label) if f.label else None
            entity.readings.append((epoch_ms(record.get(f.time)) if f.time else arrival_ms, score, anomalous,
                                    version, label))

    def _add_alert(self, record: dict[str, Any], arrival_ms: int | None) -> None:
        """An alarm episode's event: ``open`` adds an alert to the feed, ``closed`` updates it in place."""
        f = self.fields
        event_time = record.get("first_event_time") or (record.get(f.time) if f.time else None)
        event = epoch_ms(event_time)
        if event is None:
            event = arrival_ms or 0
        update = {"status": record.get("status"), "score": _finite(record.get("score")),
                  "max_score": _finite(record.get("max_score")), "anomalies": record.get("anomalies"),
                  "ended_at": record.get("ended_at"), "last_event_time": record.get("last_event_time")}
        episode = record.get("episode_id") or f"p{record.get('source_partition')}@{record.get('source_offset')}"
        known = self._episodes.get(episode)
        if known is not None:  # the same episode again (its close, or a replayed open)
            known.update({k: v for k, v in update.items() if v is not None or k == "ended_at"})
            return
        alert = {"entity": record.get(f.entity), "episode_id": episode, "event_time": event_time, "event_ms": event,
                 **update, "label": record.get(f.label) if f.label else None,
                 "model_version": record.get("model_version"),
                 "source": f"p{record.get('source_partition')}@{record.get('source_offset')}",
                 "arrival_ms": arrival_ms}
        self.totals["alerts"] += 1
        self._seq += 1
        item = (event, self._seq, alert)
        self._episodes[episode] = alert
        if len(self._alerts) < self.alerts_kept:
            heapq.heappush(self._alerts, item)
        else:
            dropped = heapq.heappushpop(self._alerts, item)  # drops the oldest event time of all
            self._episodes.pop(dropped[2]["episode_id"], None)
        if alert["entity"] is not None:
            entity = self._entity(str(alert["entity"]))
            entity.alerts += 1
            entity.last_alert_ms = max(entity.last_alert_ms or event, event)

    def _add_dead_letter(self, record: dict[str, Any], arrival_ms: int | None) -> None:
        self.totals["dead_letters"] += 1
        _capped(self._stages, record.get("stage"))
        bucket = self._minute(arrival_ms)
        if bucket is not None:
            bucket.dead_letters += 1
        self._reasons.append({
            "reason": str(record.get("reason"))[:500], "stage": record.get("stage"),
            "source": f"{record.get('source_topic')} p{record.get('source_partition')}@{record.get('source_offset')}",
            "source_timestamp": record.get("source_timestamp"), "arrival_ms": arrival_ms,
            "model_version": record.get("model_version")})

    # --- reading ---------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        with self._lock:
            return list(self._versions)

    def readings_of(self, entity: str) -> int:
        with self._lock:
            found = self._entities.get(entity)
            return len(found.readings) if found else 0

    def snapshot(self, entity: str | None = None, thresholds: Mapping[str, float | None] | None = None,
                 ) -> dict[str, Any]:
        """The page's state as JSON-ready data; ``entity`` picks the score chart's entity
        (default or unknown: the entity of the newest alert, else the most recently scored)."""
        thresholds = thresholds or {}
        with self._lock:
            feed = [a for _, _, a in sorted(self._alerts, key=lambda item: (item[0], item[1]), reverse=True)]
            default = next((a["entity"] for a in feed if a["entity"] in self._entities), None)
            if default is None and self._entities:
                default = next(reversed(self._entities))
            chosen = entity if entity in self._entities else default
            picked = self._entities.get(chosen) if chosen is not None else None
            series = sorted(picked.readings, key=lambda r: (r[0] is None, r[0] or 0)) if picked else []
            ranked = sorted(self._entities.items(),
                            key=lambda kv: (-(kv[1].last_alert_ms or -1), -kv[1].alerts, kv[0]))[:ENTITIES_SENT]
            minutes = [{"minute_ms": m, "scored": b.scored, "anomalies": b.anomalies, "dead_letters": b.dead_letters,
                        "anomaly_rate": b.anomalies / b.scored if b.scored else None,
                        "dead_letter_rate": b.dead_letters / (b.scored + b.dead_letters)
                        if b.scored + b.dead_letters else None}
                       for m, b in sorted(self._minutes.items())]
            return {
                "fields": {"entity": self.fields.entity, "time": self.fields.time, "label": self.fields.label},
                "generated_ms": int(time.time() * 1000),
                "status": dict(self.status),
                "totals": {**self.totals, "entities": len(self._entities), "last_arrival_ms": self.last_arrival_ms},
                "alerts": feed,
                "entities": [{"entity": name, "alerts": e.alerts, "scored": e.scored, "anomalies": e.anomalies,
                              "last_alert_ms": e.last_alert_ms} for name, e in ranked],
                "default_entity": default,
                "entity": None if picked is None else {
                    "entity": chosen, "scored": picked.scored, "anomalies": picked.anomalies, "alerts": picked.alerts,
                    "series": [list(r) for r in series],
                    "thresholds": {v: thresholds.get(v) for v in {r[3] for r in series} if v is not None}},
                "rates": {"clock": "arrival", "minutes": minutes},
                "dead_letters": {"by_stage": dict(self._stages.most_common()), "latest": list(reversed(self._reasons))},
                "versions": [{"model_version": v, "scored": n, "anomalies": self._version_anomalies.get(v, 0),
                              "threshold": thresholds.get(v),
                              "first_arrival_ms": self._version_seen.get(v, [None, None])[0],
                              "last_arrival_ms": self._version_seen.get(v, [None, None])[1]}
                             for v, n in self._versions.most_common()],
            }


class ThresholdCache:
    """The threshold of each model version, looked up once (a failed lookup is retried after a minute)."""

    def __init__(self, lookup: Callable[[str], float | None], retry_s: float = 60.0) -> None:
        self._lookup = lookup
        self._retry_s = retry_s
        self._known: dict[str, float | None] = {}
        self._failed_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, version: str) -> float | None:
        with self._lock:
            if version in self._known and (self._known[version] is not None or
                                           time.monotonic() - self._failed_at[version] < self._retry_s):
                return self._known[version]
        try:
            value = self._lookup(version)
        except Exception:  # noqa: BLE001 - an unknown or unreadable version: the chart shows no line
            value = None
        with self._lock:
            self._known[version] = value
            if value is None:
                self._failed_at[version] = time.monotonic()
        return value

    def known(self) -> dict[str, float | None]:
        with self._lock:
            return dict(self._known)


def registry_thresholds(settings: VigilSettings) -> Callable[[str], float | None]:
    """A lookup of a version's threshold (``telemetry@3``) in the settings' model registry."""
    from connectors.model_registry import ModelRegistry

    registry = ModelRegistry(settings.model_store, settings.s3 if settings.s3_for(settings.model_store) else None)

    def lookup(version: str) -> float | None:
        threshold = registry.manifest(registry.resolve(version)).get("threshold")
        return None if threshold is None else float(threshold)

    return lookup


# --- the consumer: a thin loop from Kafka into the state ------------------------------------------

def follow_outputs(bootstrap: str, topics: Mapping[str, str], state: DashboardState, stop: threading.Event, *,
                   thresholds: ThresholdCache | None = None, refresh_s: float = 3.0) -> None:
    """Feed ``state`` from ``topics`` ({topic: kind}) until ``stop`` is set.

    read_committed, every partition from its earliest offset, no offsets committed; topics that
    do not exist yet are looked for every ``refresh_s``. ``state.status["caught_up"]`` turns true
    once every assigned partition has been read to its end (the backlog; what follows is live).
    """
    from confluent_kafka import OFFSET_BEGINNING, TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, TopicPartition

    from connectors.kafka_io import client_config

    consumer = Consumer({**client_config(bootstrap), "group.id": f"vigil-dashboard-{time.time_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    reached: dict[tuple[str, int], bool] = {}  # partition -> its end was reached once (the backlog is read)
    next_refresh = 0.0
    try:
        while not stop.is_set():
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + refresh_s
                try:
                    meta = consumer.list_topics(timeout=5).topics
                except Exception as exc:  # noqa: BLE001 - the broker went away: shown, retried
                    state.note_error(f"cannot list topics on {bootstrap}: {exc}")
                    meta = {}
                else:
                    new = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics if t in meta
                           and meta[t].error is None for p in meta[t].partitions if (t, p) not in reached]
                    if new:
                        consumer.incremental_assign(new)
                        reached.update({(tp.topic, tp.partition): False for tp in new})
                    state.set_status(missing_topics=[t for t in topics if t not in meta], error=None)
            items = []
            for msg in consumer.consume(num_messages=2000, timeout=0.5):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        reached[(msg.topic(), msg.partition())] = True
                    else:
                        state.note_error(f"reading {msg.topic()}: {msg.error().str()}")
                    continue
                kind, stamp = msg.timestamp()
                arrival = stamp if kind != TIMESTAMP_NOT_AVAILABLE and stamp > 0 else int(time.time() * 1000)
                try:
                    record = json.loads(msg.value())
                except (TypeError, ValueError):
                    record = None  # counted as malformed
                items.append((topics[msg.topic()], record, arrival))
            if items:
                state.add_many(items)
            if thresholds is not None:
                for version in state.versions():
                    thresholds.get(version)
            state.set_status(caught_up=all(reached.values()))
    finally:
        consumer.close()


# --- the HTTP part ------------------------------------------------------------------------------

def make_server(snapshot: Callable[[str | None], dict[str, Any]], host: str, port: int) -> ThreadingHTTPServer:
    """A server of the page (``/``), its script and style, and ``/api/state?entity=...``: the JSON
    of ``snapshot(entity)``. DashboardError when ``host:port`` cannot be bound."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            if url.path == "/api/state":
                entity = (parse_qs(url.query).get("entity") or [None])[0] or None
                body = json.dumps(snapshot(entity), allow_nan=False, default=str, separators=(",", ":"))
                self._send(200, "application/json", body.encode())
            elif url.path in PAGE_FILES:
                name, kind = PAGE_FILES[url.path]
                self._send(200, kind, (PAGE_DIR / name).read_bytes())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, code: int, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # a request log line every 2 s would drown the terminal
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        raise DashboardError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    return server


class DashboardOptions(Options):
    input_topic: str = option("telemetry", "the scoring job's input topic: the dashboard reads <input>.scored, "
                              "<input>.alerts and <input>.dlq", flag="--input")
    port: int = option(8050, "port to serve on, on the settings' loopback host (0: any free port)", ge=0, le=65535)
    readings_per_entity: int = option(500, "latest scored readings kept per entity (the score chart)", ge=1)
    max_entities: int = option(1000, "entities kept (the least recently seen is dropped first)",
                               flag="--entities", ge=1)
    alerts_kept: int = option(200, "newest alerts (by event time) kept for the feed", ge=1)
    minutes: int = option(120, "minutes of anomaly and dead-letter rates kept", ge=1)
    screenshot: str | None = option(None, "read the topics to their end, render the page into this PNG with "
                                    "headless Chromium, then exit", metavar="FILE")
    timeout: float = option(120.0, "seconds --screenshot waits for the backlog and for Chromium", gt=0)


@dataclass
class Dashboard:
    """The consumer thread and the HTTP server of one input topic's outputs."""

    settings: VigilSettings
    options: DashboardOptions = field(default_factory=DashboardOptions)
    state: DashboardState | None = None
    server: ThreadingHTTPServer | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        if self.server is None:
            raise DashboardError("the dashboard is not started")
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def topics(self) -> dict[str, str]:
        return {f"{self.options.input_topic}.{kind}": kind for kind in KINDS}

    def start(self) -> Dashboard:
        """Check the broker, learn the output fields from the input's schema, serve and follow."""
        from connectors import schema_store
        from connectors.avro_serde import load_schema
        from connectors.kafka_io import check_broker

        o = self.options
        bootstrap = self.settings.bootstrap_servers
        thresholds = ThresholdCache(registry_thresholds(self.settings))

        def snapshot(entity: str | None) -> dict[str, Any]:
            assert self.state is not None  # the server starts serving after the state exists
            return {**self.state.snapshot(entity, thresholds.known()), "input": o.input_topic}

        server = make_server(snapshot, self.settings.host, o.port)  # a port in use fails before anything else
        try:
            check_broker(bootstrap)
            schema = schema_store.lookup(bootstrap, o.input_topic)
        except BaseException:
            server.server_close()
            raise
        if schema is None:
            schema = load_schema()
            print(f"note: no schema is registered for {o.input_topic!r}; reading its outputs as "
                  f"{schema['name']}'s", file=sys.stderr)
        self.state = DashboardState(Fields.of(outputs(schema)), readings_per_entity=o.readings_per_entity,
                                    max_entities=o.max_entities, alerts_kept=o.alerts_kept, minutes=o.minutes)
        self.server = server
        self._threads = [
            threading.Thread(target=follow_outputs, name="dashboard-consumer", daemon=True,
                             args=(bootstrap, self.topics, self.state, self._stop), kwargs={"thresholds": thresholds}),
            threading.Thread(target=self.server.serve_forever, name="dashboard-http", daemon=True,
                             kwargs={"poll_interval": 0.2}),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def wait_caught_up(self, timeout: float) -> bool:
        """Wait until the consumer has read every output partition to its end; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state is not None and self.state.status.get("caught_up"):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for thread in self._threads:
            thread.join(10)

    def __enter__(self) -> Dashboard:
        return self.start() if self.server is None else self

    def __exit__(self, *_: Any) -> None:
        self.stop()


# --- headless Chromium: the page as the browser renders it ---------------------------------------

def chromium_path() -> str:
    """Debian's Chromium; DashboardError saying how to install it when it is missing."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).is_file() else None)
    if not found:
        raise DashboardError("Chromium is not installed (no chromium on PATH, no /usr/bin/chromium); "
                             "`make setup` installs it (Debian package chromium)")
    return found


def run_chromium(url: str, args: Iterable[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with a new empty profile; DashboardError on failure or timeout."""
    with tempfile.TemporaryDirectory(prefix="vigil-chromium-") as profile:
        command_line = [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url]
        try:
            done = subprocess.run(command_line, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DashboardError(f"headless Chromium did not finish within {timeout:.0f}s on {url}") from None
    if done.returncode != 0:
        raise DashboardError(f"headless Chromium failed (exit {done.returncode}) on {url}: {done.stderr[-800:]}")
    return done


def dump_dom(url: str, *, budget_ms: int = 5000, timeout: float = 60.0) -> str:
    """The page's DOM after ``budget_ms`` of (virtual) time: its scripts have fetched and rendered."""
    return run_chromium(url, ["--dump-dom", f"--virtual-time-budget={budget_ms}"], timeout=timeout).stdout


def screenshot(url: str, file: str | Path, *, size: tuple[int, int] = (1400, 1000), budget_ms: int = 5000,
               timeout: float = 60.0) -> Path:
    """A PNG of the page as headless Chromium renders it at ``size`` (width, height in px)."""
    path = Path(file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    run_chromium(url, [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}",
                       f"--virtual-time-budget={budget_ms}"], timeout=timeout)
    if not path.is_file() or path.stat().st_size == 0:
        raise DashboardError(f"headless Chromium wrote no screenshot to {path}")
    return path


# --- the command ----------------------------------------------------------------------------------

def run(settings: VigilSettings, o: DashboardOptions) -> int:
    dashboard = Dashboard(settings, o).start()
    print(f"dashboard: {dashboard.url}", flush=True)
    try:
        if o.screenshot:
            started = time.monotonic()
            if not dashboard.wait_caught_up(o.timeout):
                raise DashboardError(f"the outputs of {o.input_topic!r} were not read to their end "
                                     f"within {o.timeout:.0f}s")
            left = max(10.0, o.timeout - (time.monotonic() - started))
            print(f"screenshot: {screenshot(dashboard.url, o.screenshot, timeout=left)}")
            return 0
        print(f"reading {', '.join(dashboard.topics)} (Ctrl-C stops)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
        return 0
    finally:
        dashboard.stop()


COMMAND = command("dashboard", __doc__, run, options=DashboardOptions,
                  settings_flags=("kafka.bootstrap_servers", "model.store"),
                  expected_errors=(ConnectorError, DashboardError), prog="python -m jobs.dashboard")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
