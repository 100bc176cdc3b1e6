"""The model registry: named models, numbered versions, movable aliases, and every change recorded.

A model is named after what it was trained on (by default the topic: ``telemetry``,
``plant-a.pumps``); each training publishes a new version, numbered 1, 2, ... within its model;
aliases (``champion``, ``challenger``, any other name) point at versions and move. Jobs score with
a reference: ``name@alias`` (``telemetry@champion``), ``name@N`` or just ``name`` (its champion).

Layout under the store root (a local path, ``file://`` URI or ``s3://bucket/prefix``)::

    <root>/<name>/artifacts/<artifact id>/...   the files of each version (connectors/model_store.py:
                                                manifest.json, model.keras, report.png, checksums)
    <root>/<name>/log/<generation>-<token>.json one file per change, never rewritten

The log is the registry: publishing a version, moving an alias and deleting a version each
append one event (who, when, what, why, and the figures behind the decision). The state of a
model (its versions and aliases) is the fold of its log, so it is never half-changed: a change
is the single write of its event file. Two writers that append the same generation at once are
told apart by their tokens (the lowest wins; the other's event is removed and it gets
RegistryConflict, nothing changed), which serialises changes on any store that lists what it
holds consistently (a local disk, S3). Tokens start with the writer's clock, so writers on
machines whose clocks disagree by more than one write's duration could both believe they won.

Each version records the schema id (name and fingerprint) and the exact, ordered feature list it
was trained on; a job hot-swaps only to a version that matches what it reads (udfs/anomaly_score).
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from connectors.model_store import ModelStore, ModelStoreError
from vigil.settings import S3Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_LOG_FILE = re.compile(r"^(\d{8})-([0-9a-z-]+)\.json$")


class RegistryError(ModelStoreError):
    """A model, version or alias is unknown, or a change is not allowed; the message says which."""


class RegistryConflict(RegistryError):
    """Another change to the same model was written at the same moment; this one was not made."""


@dataclass(frozen=True)
class ModelRef:
    """``name@alias``, ``name@N`` or ``name`` (= ``name@champion``)."""

    name: str
    alias: str | None = None
    number: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, target = str(text).strip().partition("@")
        if not _NAME.match(name):
            raise RegistryError(f"bad model reference {text!r}: expected name, name@alias or name@N "
                                f"(names: letters, digits, '.', '_', '-')")
        if not target:
            return cls(name, CHAMPION)
        if target.isdigit():
            return cls(name, number=int(target))
        if not _ALIAS.match(target):
            raise RegistryError(f"bad alias {target!r} in {text!r}: lower-case letters, digits, '_' and '-'")
        return cls(name, target)

    def __str__(self) -> str:
        return f"{self.name}@{self.number if self.number is not None else self.alias}"


@dataclass(frozen=True)
class Version:
    """One published version of a model, as the log records it."""

    model: str
    number: int
    artifact: str
    created_at: str
    by: str
    schema: str | None
    features: tuple[str, ...]
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.number}"


@dataclass
class ModelState:
    """A model's versions and aliases after folding its log, and the log itself."""

    name: str
    versions: dict[int, Version] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    generation: int = 0

    def aliases_of(self, number: int) -> list[str]:
        return sorted(a for a, n in self.aliases.items() if n == number)

    def previous_targets(self, alias: str) -> list[int]:
        """Versions ``alias`` pointed at before, newest first (for falling back)."""
        seen = [e["version"] for e in reversed(self.history) if e["action"] == "alias" and e["alias"] == alias]
        return [n for n in dict.fromkeys(seen[1:]) if n in self.versions]


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ModelRegistry:
    """Named, versioned models with aliases in one store (see the module docstring)."""

    def __init__(self, uri: str, s3: S3Settings | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.s3 = s3
        if uri.startswith(("s3://", "s3a://")):
            if s3 is None:
                raise ValueError(f"model store {uri!r} is on S3: pass the S3 settings with its endpoint")
            from connectors.object_store import s3_filesystem

            self.fs: pafs.FileSystem = s3_filesystem(s3)
            self.root = uri.split("://", 1)[1].rstrip("/")
        else:
            self.fs = pafs.LocalFileSystem()
            self.root = str(Path(uri[len("file://"):] if uri.startswith("file://") else uri).resolve())

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def artifacts(self, name: str) -> ModelStore:
        base = f"{self.uri}/{name}/artifacts"
        return ModelStore(base, self.s3)

    # --- reading ----------------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Every model with at least one event in its log."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError:
            return []
        out = []
        for info in infos:
            if info.type == pafs.FileType.Directory and _NAME.match(info.base_name):
                if self._log_files(info.base_name):
                    out.append(info.base_name)
        return sorted(out)

    def _log_files(self, name: str) -> list[tuple[int, str]]:
        """(generation, file name) of the winning event of each generation, in order."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self._path(name, "log"), allow_not_found=True))
        except OSError as exc:
            raise RegistryError(f"{self.uri}/{name}: the registry log cannot be listed: {exc}") from exc
        winners: dict[int, str] = {}
        for info in infos:
            match = _LOG_FILE.match(info.base_name)
            if info.type == pafs.FileType.File and match:
                g = int(match.group(1))
                if g not in winners or info.base_name < winners[g]:
                    winners[g] = info.base_name
        return sorted(winners.items())

    def _read_event(self, name: str, file: str) -> dict[str, Any]:
        try:
            with self.fs.open_input_stream(self._path(name, "log", file)) as f:
                return json.loads(f.read())
        except (OSError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{self.uri}/{name}/log/{file} is damaged ({exc}); the registry of "
                                f"{name!r} cannot be read") from exc

    def state(self, name: str) -> ModelState:
        """The model's versions and aliases; RegistryError when it has none or its log is damaged."""
        files = self._log_files(name)
        if not files:
            known = self.models()
            raise RegistryError(f"no model named {name!r} in {self.uri}"
                                + (f" (models: {', '.join(known)})" if known else " (the registry is empty)"))
        state = ModelState(name)
        for generation, file in files:
            event = self._read_event(name, file)
            state.history.append(event)
            state.generation = generation
            action = event.get("action")
            if action == "publish":
                number = int(event["version"])
                state.versions[number] = Version(
                    name, number, event["artifact"], event["at"], event.get("by", ""), event.get("schema"),
                    tuple(event.get("features") or ()), event.get("reason", ""), event.get("figures") or {})
            elif action == "alias":
                if event.get("version") is None:
                    state.aliases.pop(event["alias"], None)
                else:
                    state.aliases[event["alias"]] = int(event["version"])
            elif action == "delete":
                state.versions.pop(int(event["version"]), None)
        return state

    def resolve(self, ref: str | ModelRef, state: ModelState | None = None) -> Version:
        """The version a reference names; RegistryError naming what is unknown."""
        ref = ref if isinstance(ref, ModelRef) else ModelRef.parse(ref)
        state = state or self.state(ref.name)
        if ref.number is not None:
            if ref.number not in state.versions:
                raise RegistryError(f"model {ref.name!r} has no version {ref.number} "
                                    f"(versions: {', '.join(map(str, sorted(state.versions))) or 'none'})")
            return state.versions[ref.number]
        if ref.alias not in state.aliases:
            raise RegistryError(f"model {ref.name!r} has no alias {ref.alias!r} "
                                f"(aliases: {', '.join(f'{a}={n}' for a, n in sorted(state.aliases.items())) or 'none'})")
        return state.versions[state.aliases[ref.alias]]

    def manifest(self, version: Version) -> dict[str, Any]:
        """The version's manifest, with ``version`` set to its reference (``name@N``)."""
        manifest = self.artifacts(version.model).manifest(version.artifact)
        return {**manifest, "version": version.ref, "artifact": version.artifact, "model_name": version.model,
                "number": version.number}

    def fetch(self, version: Version, cache_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
        """A verified local copy of the version's files: (folder, manifest as in ``manifest()``)."""
        folder, manifest = self.artifacts(version.model).fetch(version.artifact, cache_dir)
        return folder, {**manifest, "version": version.ref, "artifact": version.artifact,
                        "model_name": version.model, "number": version.number}

    # --- writing ----------------------------------------------------------------------------------
    def _append(self, name: str, event: dict[str, Any], expect_generation: int) -> dict[str, Any]:
        """Write ``event`` as generation ``expect_generation + 1``; RegistryConflict if another won it."""
        generation = expect_generation + 1
        token = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        file = f"{generation:08d}-{token}.json"
        event = {"generation": generation, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "by": _who(), **event}
        self.fs.create_dir(self._path(name, "log"), recursive=True)
        with self.fs.open_output_stream(self._path(name, "log", file)) as out:
            out.write(json.dumps(event, indent=1, sort_keys=True).encode())
        winners = dict(self._log_files(name))
        if winners.get(generation) != file:
            self.fs.delete_file(self._path(name, "log", file))
            raise RegistryConflict(f"another change to model {name!r} was written at the same moment "
                                   f"(generation {generation}); this {event['action']} was not made: retry")
        return event

    def publish(self, name: str, local_dir: Path, manifest: dict[str, Any], *, reason: str = "",
                alias: str | None = None, figures: dict[str, Any] | None = None) -> Version:
        """Publish ``local_dir`` as the model's next version; point ``alias`` at it when given.

        The files go in first (atomically, connectors/model_store.py); the version exists once its
        publish event is in the log. ``alias=None``: ``champion`` for a model's first version (a
        first training is scored at once), else ``challenger`` (later ones wait to be promoted).
        """
        if not _NAME.match(name):
            raise RegistryError(f"bad model name {name!r}: letters, digits, '.', '_', '-'")
        artifact = self.artifacts(name).publish(local_dir, manifest)
        for attempt in range(5):
            state = self._state_or_empty(name)
            number = max([*state.versions, *(int(e["version"]) for e in state.history if e["action"] == "publish"),
                          0]) + 1
            try:
                self._append(name, {"action": "publish", "version": number, "artifact": artifact,
                                    "schema": manifest.get("schema"), "features": list(manifest["features"]["names"]),
                                    "reason": reason, "figures": figures or {}}, state.generation)
                break
            except RegistryConflict:
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        version = self.state(name).versions[number]
        self.set_alias(name, alias or default_alias(state), number, reason=reason or "published")
        return version

    def _state_or_empty(self, name: str) -> ModelState:
        return self.state(name) if self._log_files(name) else ModelState(name)

    def set_alias(self, name: str, alias: str, number: int | None, *, reason: str = "",
                  figures: dict[str, Any] | None = None, expect: int | None = None) -> dict[str, Any]:
        """Point ``alias`` at version ``number`` (None removes the alias); returns the event.

        ``expect``: the version the alias must point at now (a promotion decided on stale figures
        is refused). RegistryConflict when another change won the same moment.
        """
        if not _ALIAS.match(alias):
            raise RegistryError(f"bad alias {alias!r}: lower-case letters, digits, '_' and '-'")
        state = self.state(name)
        if number is not None and number not in state.versions:
            raise RegistryError(f"model {name!r} has no version {number} "
                                f"(versions: {', '.join(map(str, sorted(state.versions)))})")
        previous = state.aliases.get(alias)
        if expect is not None and previous != expect:
            raise RegistryConflict(f"{name}@{alias} points at version {previous}, not {expect}: another change "
                                   f"came first; nothing was changed")
        return self._append(name, {"action": "alias", "alias": alias, "version": number, "previous": previous,
                                   "reason": reason, "figures": figures or {}}, state.generation)

    def delete_version(self, name: str, number: int, *, reason: str = "") -> dict[str, Any]:
        """Forget a version no alias points at (its files stay until the store is cleaned)."""
        state = self.state(name)
        if number not in state.versions:
            raise RegistryError(f"model {name!r} has no version {number}")
        pointing = state.aliases_of(number)
        if pointing:
            raise RegistryError(f"version {number} of {name!r} is {', '.join(pointing)}: move "
                                f"{'those aliases' if len(pointing) > 1 else 'the alias'} first")
        return self._append(name, {"action": "delete", "version": number, "reason": reason}, state.generation)


def default_alias(state: ModelState) -> str:
    """The alias a new version gets unless told otherwise: champion if the model has none yet."""
    return CHALLENGER if CHAMPION in state.aliases else CHAMPION


def compatible(manifest: dict[str, Any], features: list[str], schema: str | None,
               context: int | None = None) -> str | None:
    """Why a model cannot score a job's input (None when it can): features and their order, schema,
    and (``context``: the readings per entity the job provides) the model's window."""
    names = list(manifest["features"]["names"])
    if names != list(features):
        if sorted(names) == sorted(features):
            return f"its features are in another order ({names} vs the job's {list(features)})"
        return f"it expects features {names}, the job reads {list(features)}"
    window = int(manifest["features"].get("window", 1))
    if context is not None and window > context:
        return (f"it reads the last {window} readings of each entity, the job provides {context} "
                f"(restart the job with --context {window} or more)")
    theirs = manifest.get("schema")
    if schema and theirs and theirs.split("@")[-1] != schema.split("@")[-1]:
        return f"it was trained on schema {theirs}, the job reads {schema}"
    return None
