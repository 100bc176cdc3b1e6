"""The model registry on the command line: list, show, history, alias, compare, delete.

    vigil models list
    vigil models show telemetry@champion
    vigil models history telemetry
    vigil models alias telemetry champion 3 --reason "better recall at the same precision"
    vigil models compare telemetry@champion telemetry@challenger
    vigil models delete telemetry 1

Every change (a new version, an alias moved, a version deleted) is one event in the model's log
with who, when and why (connectors/model_registry.py); jobs that score with ``name@alias`` pick
an alias move up without a restart.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from connectors.model_registry import ModelRegistry, RegistryError
from connectors.model_store import ModelStoreError
from udfs.feature_set import FeatureSet
from vigil.commands import Options, command, group, option
from vigil.settings import VigilSettings

_FIGURES = ("precision", "recall", "f1", "false_positive_rate", "rows", "anomalies")


def registry(settings: VigilSettings) -> ModelRegistry:
    s3 = settings.s3 if settings.s3_for(settings.model_store) else None
    return ModelRegistry(settings.model_store, s3)


def _figures(manifest: dict[str, Any]) -> dict[str, Any]:
    evaluation = (manifest.get("metrics") or {}).get("evaluation") or {}
    return {k: evaluation[k] for k in _FIGURES if k in evaluation}


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def list_models(settings: VigilSettings, _o: None) -> int:
    reg = registry(settings)
    names = reg.models()
    if not names:
        print(f"no models in {settings.model_store}")
    for name in names:
        state = reg.state(name)
        print(f"{name}: {len(state.versions)} version(s); aliases: "
              + (", ".join(f"{a}={n}" for a, n in sorted(state.aliases.items())) or "none"))
        for number, version in sorted(state.versions.items()):
            figures = ", ".join(f"{k} {_fmt(v)}" for k, v in version.figures.items() if k in _FIGURES[:4])
            tags = ",".join(state.aliases_of(number))
            print(f"  {number:>3}  {version.created_at}  {tags or '-':<22} {figures}")
    return 0


class RefOptions(Options):
    ref: str = option(..., "name@alias, name@N or name (its champion)", argument=True, metavar="MODEL")


def show(settings: VigilSettings, o: RefOptions) -> int:
    reg = registry(settings)
    version = reg.resolve(o.ref)
    manifest = reg.manifest(version)
    state = reg.state(version.model)
    kafka = ((manifest.get("training") or {}).get("sources") or {}).get("kafka") or {}
    print(f"{version.ref}  (aliases: {', '.join(state.aliases_of(version.number)) or 'none'})")
    print(f"  created     {version.created_at} by {version.by}: {version.reason}")
    print(f"  artifact    {version.artifact} ({', '.join(sorted(manifest.get('files', {})))})")
    model = manifest.get("model", {})
    members = model.get("members") or [model] if model else []
    summary = {k: v for k, v in model.items() if k not in ("members", "score")}
    print(f"  model       {json.dumps({**summary, 'members': len(members)})}")
    print(f"  schema      {manifest.get('schema')}")
    print(f"  features    {', '.join(manifest['features']['names'])}")
    print(f"  reads       {FeatureSet.from_dict(manifest['features']).describe()}")
    rule = manifest.get("threshold_rule") or {"quantile": manifest.get("threshold_quantile"), "margin": 1}
    print(f"  threshold   {manifest['threshold']:.6g} ({rule['margin']:g} x the {rule['quantile']} quantile of the "
          f"validation scores)")
    print(f"  evaluation  {json.dumps(_figures(manifest))}")
    if kafka:
        ranges = ", ".join(f"p{r['partition']}:{r['start']}..{r['end']}" for r in kafka.get("ranges", []))
        print(f"  lineage     topic {kafka.get('topic')} ({ranges}); undecodable skipped: {kafka.get('undecodable')}")
    return 0


class NameOptions(Options):
    name: str = option(..., "the model's name", argument=True, metavar="NAME")


def describe_event(event: dict) -> str:
    """One history event in words (each action has fields of its own)."""
    action = event.get("action")
    if action == "publish":
        return f"published version {event.get('version')}"
    if action == "alias":
        return f"{event.get('alias')}: {event.get('previous')} -> {event.get('version')}"
    if action == "delete":
        return f"deleted version {event.get('version')}"
    return str(action)


def history(settings: VigilSettings, o: NameOptions) -> int:
    for event in registry(settings).state(o.name).history:
        what = describe_event(event)
        figures = f"  {json.dumps(event['figures'])}" if event.get("figures") else ""
        print(f"{event['generation']:>4}  {event['at']}  {event['by']}  {what}"
              f"{'  (' + event['reason'] + ')' if event.get('reason') else ''}{figures}")
    return 0


def _version_number(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit():
        raise ValueError(f"expected a version number or none, got {text!r}")
    return int(text)


class AliasOptions(Options):
    name: str = option(..., "the model's name", argument=True, metavar="NAME")
    alias: str = option(..., "the alias to set or move (champion, challenger, ...)", argument=True, metavar="ALIAS")
    version: str = option(..., "the version it points at from now on; none removes the alias", argument=True,
                          metavar="VERSION")
    reason: str = option("", "why (kept in the history)")
    expect: int | None = option(None, "refuse unless the alias points at this version now")


def alias(settings: VigilSettings, o: AliasOptions) -> int:
    number = _version_number(o.version)
    event = registry(settings).set_alias(o.name, o.alias, number, reason=o.reason, expect=o.expect)
    print(f"{o.name}@{o.alias}: {event['previous']} -> {event['version']}")
    return 0


class CompareOptions(Options):
    first: str = option(..., "one version: name@alias or name@N", argument=True, metavar="MODEL")
    second: str = option(..., "the other", argument=True, metavar="MODEL")


def compare(settings: VigilSettings, o: CompareOptions) -> int:
    reg = registry(settings)
    a, b = (reg.manifest(reg.resolve(r)) for r in (o.first, o.second))
    print(f"{'':24s} {a['version']:>24s} {b['version']:>24s}")
    rows = [("threshold", a["threshold"], b["threshold"]), ("features", len(a["features"]["names"]),
                                                          len(b["features"]["names"]))]
    rows += [(k, _figures(a).get(k), _figures(b).get(k)) for k in _FIGURES]
    for label, x, y in rows:
        print(f"{label:24s} {_fmt(x):>24s} {_fmt(y):>24s}")
    only_a = [f for f in a["features"]["names"] if f not in b["features"]["names"]]
    only_b = [f for f in b["features"]["names"] if f not in a["features"]["names"]]
    if only_a or only_b:
        print(f"features only in {a['version']}: {only_a}; only in {b['version']}: {only_b}")
    elif a["features"]["names"] != b["features"]["names"]:
        print("same features in another order: a job scoring one cannot swap to the other")
    return 0


class DeleteOptions(Options):
    name: str = option(..., "the model's name", argument=True, metavar="NAME")
    version: int = option(..., "the version to delete (no alias may point at it)", argument=True, metavar="VERSION")
    reason: str = option("", "why (kept in the history)")


def delete(settings: VigilSettings, o: DeleteOptions) -> int:
    registry(settings).delete_version(o.name, o.version, reason=o.reason)
    print(f"{o.name}@{o.version}: deleted (its files stay in the store)")
    return 0


_STORE = ("model.store",)
_ERRORS = (RegistryError, ModelStoreError, ValueError)
MODELS = group("models", __doc__, {
    "list": command("list", "Every model, its versions, aliases and evaluation figures.", list_models,
                    settings_flags=_STORE, expected_errors=_ERRORS),
    "show": command("show", "One version: manifest, features, threshold, figures, lineage.", show,
                    options=RefOptions, settings_flags=_STORE, expected_errors=_ERRORS),
    "history": command("history", "Every change to a model, oldest first, with who, when and why.", history,
                       options=NameOptions, settings_flags=_STORE, expected_errors=_ERRORS),
    "alias": command("alias", "Set or move an alias (none removes it); running jobs follow it.", alias,
                     options=AliasOptions, settings_flags=_STORE, expected_errors=_ERRORS),
    "compare": command("compare", "Two versions side by side.", compare, options=CompareOptions,
                       settings_flags=_STORE, expected_errors=_ERRORS),
    "delete": command("delete", "Delete a version no alias points at.", delete, options=DeleteOptions,
                      settings_flags=_STORE, expected_errors=_ERRORS),
}, prog="python -m jobs.models", settings_flags=_STORE)


def main(argv: list[str] | None = None) -> int:
    return MODELS.main(argv)


if __name__ == "__main__":
    sys.exit(main())
