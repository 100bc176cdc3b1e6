"""Versioned model artifacts on a local path or an S3-compatible store, with a LATEST pointer.

Layout under the store root::

    <root>/<version>/manifest.json      what the model is (features, normalisation, threshold,
                                        training offsets, metrics, library versions, file checksums)
    <root>/<version>/model.keras        the TensorFlow/Keras model
    <root>/<version>/...                report.png and other files listed in the manifest
    <root>/LATEST                       the version id of the newest published model

Publishing is atomic for readers: on a local path the version folder is renamed into place; on S3
the manifest is uploaded after every other file, and LATEST only after the manifest. A version
without a manifest is incomplete and is never loaded. Loading verifies the manifest and every
file's SHA-256, and fails with ModelStoreError naming what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from connectors.errors import ConnectorError
from vigil.settings import S3Settings

MANIFEST = "manifest.json"
LATEST = "LATEST"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "version", "created_at", "features", "threshold", "files", "model")


class ModelStoreError(ConnectorError):
    """A model artifact is missing, incomplete, damaged or does not match what the caller expects."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_manifest(manifest: Any, where: str) -> dict[str, Any]:
    """Raise ModelStoreError unless ``manifest`` has the keys and format this code understands."""
    if not isinstance(manifest, dict):
        raise ModelStoreError(f"{where}: manifest is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelStoreError(f"{where}: manifest lacks {missing}; the artifact is damaged or not a Vigil model")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ModelStoreError(f"{where}: manifest format {manifest['format_version']!r} is not supported "
                              f"(this code reads format {FORMAT_VERSION})")
    return manifest


class ModelStore:
    """A model store rooted at a local path, ``file://`` URI or ``s3://bucket/prefix``."""

    def __init__(self, uri: str, s3: S3Settings | None = None) -> None:
        self.uri = uri
        if uri.startswith("s3://") or uri.startswith("s3a://"):
            if s3 is None:
                raise ValueError(f"model store {uri!r} is on S3: pass the S3 settings with its endpoint")
            from connectors.object_store import s3_filesystem

            self.fs: pafs.FileSystem = s3_filesystem(s3)
            self.root = uri.split("://", 1)[1].rstrip("/")
            self.local = False
        else:
            path = Path(uri[len("file://"):] if uri.startswith("file://") else uri).resolve()
            self.fs = pafs.LocalFileSystem()
            self.root = str(path)
            self.local = True

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    # --- writing --------------------------------------------------------------------------------
    def publish(self, local_dir: Path, manifest: dict[str, Any]) -> str:
        """Publish the files in ``local_dir`` with ``manifest`` as a new version; returns its id."""
        version = manifest["version"]
        files = {p.name: _sha256(p) for p in sorted(Path(local_dir).iterdir()) if p.is_file() and p.name != MANIFEST}
        manifest = check_manifest({**manifest, "format_version": FORMAT_VERSION, "files": files}, version)
        if self.fs.get_file_info(self._path(version)).type != pafs.FileType.NotFound:
            raise ModelStoreError(f"version {version} already exists in {self.uri}")
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        if self.local:
            os.makedirs(self.root, exist_ok=True)
            staging = Path(self.root) / f".{version}.{uuid.uuid4().hex[:6]}.tmp"
            staging.mkdir()
            for name in files:  # top-level files only, exactly those the manifest lists
                shutil.copy2(Path(local_dir) / name, staging / name)
            (staging / MANIFEST).write_bytes(body)
            os.rename(staging, Path(self.root) / version)  # atomic on one filesystem
        else:
            for name in files:
                pafs.copy_files(str(Path(local_dir) / name), self._path(version, name),
                                source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
            with self.fs.open_output_stream(self._path(version, MANIFEST)) as out:
                out.write(body)
        self._write_latest(version)
        return version

    def _write_latest(self, version: str) -> None:
        if self.local:
            tmp = Path(self.root) / f".{LATEST}.{uuid.uuid4().hex[:6]}"
            tmp.write_text(version + "\n")
            os.replace(tmp, Path(self.root) / LATEST)
        else:
            with self.fs.open_output_stream(self._path(LATEST)) as out:
                out.write((version + "\n").encode())

    # --- reading --------------------------------------------------------------------------------
    def latest_version(self) -> str:
        try:
            with self.fs.open_input_stream(self._path(LATEST)) as f:
                version = f.read().decode().strip()
        except (FileNotFoundError, OSError) as exc:
            raise ModelStoreError(f"no model has been published to {self.uri} (no {LATEST} pointer); "
                                  f"train one with `python -m jobs.train_autoencoder`") from exc
        if not version:
            raise ModelStoreError(f"{self.uri}/{LATEST} is empty")
        return version

    def versions(self) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError:
            return []
        out = []
        for info in infos:
            if info.type == pafs.FileType.Directory and not info.base_name.startswith("."):
                if self.fs.get_file_info(self._path(info.base_name, MANIFEST)).type == pafs.FileType.File:
                    out.append(info.base_name)
        return sorted(out)

    def manifest(self, version: str = "latest") -> dict[str, Any]:
        version = self.latest_version() if version == "latest" else version
        where = f"{self.uri}/{version}"
        try:
            with self.fs.open_input_stream(self._path(version, MANIFEST)) as f:
                raw = f.read()
        except (FileNotFoundError, OSError) as exc:
            raise ModelStoreError(f"{where}: no {MANIFEST}; the version is missing or was never completed") from exc
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelStoreError(f"{where}: {MANIFEST} is not valid JSON ({exc}); the artifact is damaged") from exc
        return check_manifest(manifest, where)

    def fetch(self, version: str = "latest", cache_dir: Path | None = None) -> tuple[Path, dict[str, Any]]:
        """A verified local copy of ``version``: (folder, manifest). Checksums are always checked."""
        manifest = self.manifest(version)
        version = manifest["version"]
        where = f"{self.uri}/{version}"
        if self.local:
            folder = Path(self._path(version))
        else:
            base = Path(cache_dir or tempfile.gettempdir()) / "vigil-models"
            folder = base / version
            if not folder.exists():
                staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=base if base.exists() else None))
                for name in manifest["files"]:
                    pafs.copy_files(self._path(version, name), str(staging / name),
                                    source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
                base.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(staging, folder)
                except OSError:
                    shutil.rmtree(staging, ignore_errors=True)  # another worker won the race
        for name, digest in manifest["files"].items():
            path = folder / name
            if not path.exists():
                raise ModelStoreError(f"{where}: file {name} listed in the manifest is missing")
            if _sha256(path) != digest:
                raise ModelStoreError(f"{where}: file {name} does not match its checksum; the artifact is damaged")
        return folder, manifest
