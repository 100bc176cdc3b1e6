"""Where a resubmitted job goes on: the latest retained checkpoint of its previous run.

Offsets that Flink commits to the consumer group are a progress hint, committed after a
checkpoint completes: a process killed between the sink's commit and the source's offset commit
would re-read, and re-write, what was already committed. A job's own checkpoints hold source
offsets and sink transactions together, so a job that resumes from the latest one goes on with no
duplicate and no gap. Checkpoints are retained on cancellation and failure (flink-conf:
``externalized-checkpoint-retention: RETAIN_ON_CANCELLATION``); this module remembers, per job,
input topic and consumer group, which job id ran last (``<home>/runs/<key>.json``), and finds that
job's newest complete checkpoint (``<checkpoint dir>/<job id>/chk-N/_metadata``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from vigil.settings import VigilSettings


def run_key(job: str, input_topic: str, group_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{job}--{input_topic}--{group_id}")


def _pointer(settings: VigilSettings, key: str) -> Path:
    return settings.home / "runs" / f"{key}.json"


def _filesystem(uri: str, settings: VigilSettings) -> tuple[pafs.FileSystem, str]:
    if uri.startswith(("s3://", "s3a://")):
        from connectors.object_store import s3_filesystem

        return s3_filesystem(settings.s3), uri.split("://", 1)[1].rstrip("/")
    return pafs.LocalFileSystem(), uri.removeprefix("file://").rstrip("/")


def latest_checkpoint(settings: VigilSettings, key: str) -> str | None:
    """The newest complete retained checkpoint of the last run recorded under ``key``, if any."""
    try:
        run = json.loads(_pointer(settings, key).read_text())
    except (OSError, ValueError):
        return None
    fs, root = _filesystem(run["checkpoint_dir"], settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/{run['job_id']}", allow_not_found=True))
    except OSError:
        return None
    numbered = []
    for info in infos:
        match = re.fullmatch(r"chk-(\d+)", info.base_name)
        if match and fs.get_file_info(f"{info.path}/_metadata").type == pafs.FileType.File:
            numbered.append((int(match.group(1)), info.path))
    if not numbered:
        return None
    path = max(numbered)[1]
    return path if "://" in path else Path(path).as_uri()


def remember(settings: VigilSettings, key: str, job_id: str, checkpoint_dir: str, **extra: Any) -> None:
    """Record that ``job_id`` is now the run of ``key`` (its checkpoints are the ones to resume from)."""
    path = _pointer(settings, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"job_id": job_id, "checkpoint_dir": checkpoint_dir, **extra}, indent=1))
    tmp.replace(path)
