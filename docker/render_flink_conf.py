"""Render the cluster's Flink config.yaml when a container starts.

    python docker/render_flink_conf.py            # writes $FLINK_CONF_DIR/config.yaml
    python docker/render_flink_conf.py --print    # prints it (secrets masked)

The layers, later ones winning:

1. ``stack.flink_home.render_config(settings, profile)``: flink-conf/config.yaml, the profile
   overlay (``VIGIL_FLINK_PROFILE``, default ``cluster``) and the machine values the local stack
   uses (interpreter, tmp dirs, S3 keys from ``VIGIL_S3_ACCESS_KEY`` / ``VIGIL_S3_SECRET_KEY``);
2. the profile overlay again, then each overlay named in ``VIGIL_FLINK_CONF_OVERLAYS``
   (comma-separated, e.g. ``gpu`` -> flink-conf/config.gpu.yaml). The profile overlay is applied
   a second time because render_config puts its loopback addresses (127.0.0.1) over the overlay,
   which is right on one machine and wrong in a container network;
3. per-container values: ``taskmanager.host`` (``TASK_MANAGER_HOST`` or this container's address);
4. ``FLINK_PROPERTIES``: YAML (nested or ``key.path: value`` lines), as in Flink's own images.

The result is written flattened (one ``key.path: value`` per line), which Flink 2's config.yaml
reader accepts like the nested form; flattening first avoids clashes between the nested and the
dotted spellings of one key. Credentials are read at start, so they never enter the image.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stack import flink_home
from vigil.settings import VigilSettings

SECRET_KEYS = ("s3.secret-key", "s3.access-key")


class RenderError(ValueError):
    """An overlay or FLINK_PROPERTIES cannot be used; the message names it."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b.c": 1}}`` -> ``{"a.b.c": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def load_overlay(name: str) -> dict[str, Any]:
    """flink-conf/config.<name>.yaml, flattened; a missing file is an error (a typo in an env var)."""
    path = flink_home.FLINK_CONF_SOURCE / f"config.{name}.yaml"
    if not path.is_file():
        raise RenderError(f"overlay {name!r}: {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, Mapping):
        raise RenderError(f"overlay {name!r}: {path} is not a YAML mapping")
    return flatten(data)


def own_address() -> str:
    """This container's IP on the compose network (its host name may not resolve elsewhere)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


def render(environ: Mapping[str, str]) -> dict[str, Any]:
    """The flattened config for this container, from ``environ`` (see the module docstring)."""
    settings = VigilSettings.from_environ(environ)
    profile = environ.get("VIGIL_FLINK_PROFILE") or "cluster"
    config = flatten(flink_home.render_config(settings, profile=profile))
    extra = [n.strip() for n in (environ.get("VIGIL_FLINK_CONF_OVERLAYS") or "").split(",") if n.strip()]
    for name in [profile, *extra]:
        config.update(load_overlay(name))
    config["taskmanager.host"] = environ.get("TASK_MANAGER_HOST") or own_address()
    properties = environ.get("FLINK_PROPERTIES") or ""
    if properties.strip():
        try:
            parsed = yaml.safe_load(properties)
        except yaml.YAMLError as exc:
            raise RenderError(f"FLINK_PROPERTIES is not valid YAML: {exc}") from exc
        if not isinstance(parsed, Mapping):
            raise RenderError(f"FLINK_PROPERTIES must be YAML `key: value` lines, got {properties!r}")
        config.update(flatten(parsed))
    return config


def to_yaml(config: Mapping[str, Any], *, mask_secrets: bool = False) -> str:
    shown = {k: ("***" if mask_secrets and k in SECRET_KEYS else v) for k, v in config.items()}
    return yaml.safe_dump(shown, sort_keys=True, width=10_000, default_flow_style=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the config (secrets masked), write nothing")
    args = parser.parse_args(argv)
    try:
        config = render(os.environ)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print:
        sys.stdout.write(to_yaml(config, mask_secrets=True))
        return 0
    conf_dir = Path(os.environ.get("FLINK_CONF_DIR") or VigilSettings.load().flink_home / "conf")
    conf_dir.mkdir(parents=True, exist_ok=True)
    target = conf_dir / "config.yaml"
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text("# Rendered at container start by docker/render_flink_conf.py; edit flink-conf/ instead.\n"
                   + to_yaml(config))
    tmp.chmod(0o600)  # holds the S3 secret key
    os.replace(tmp, target)
    print(f"flink config: {target} (profile {os.environ.get('VIGIL_FLINK_PROFILE') or 'cluster'}, "
          f"overlays {os.environ.get('VIGIL_FLINK_CONF_OVERLAYS') or 'none'}, "
          f"taskmanager.host {config['taskmanager.host']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
