"""The model registry: named models, numbered versions, aliases, a log of every change, no half-changes."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from connectors.model_registry import (
    CHAMPION,
    ModelRef,
    ModelRegistry,
    RegistryConflict,
    RegistryError,
    compatible,
)


def artifact(tmp_path: Path, tag: str, features: list[str] | None = None, schema: str = "dev.x.A@00ff") -> tuple:
    work = tmp_path / f"work-{tag}-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    (work / "model.keras").write_bytes(tag.encode() * 100)
    manifest = {"version": f"art-{tag}-{uuid.uuid4().hex[:6]}", "created_at": "2026-01-01T00:00:00+00:00",
                "features": {"names": features or ["a", "b"]}, "threshold": 0.5, "model": {"file": "model.keras"},
                "schema": schema}
    return work, manifest


def test_two_datasets_in_one_store_are_two_models(tmp_path):
    reg = ModelRegistry(str(tmp_path / "store"))
    a1 = reg.publish("plant-a", *artifact(tmp_path, "a1"), reason="first")
    b1 = reg.publish("plant-b", *artifact(tmp_path, "b1", ["x", "y", "z"]))
    a2 = reg.publish("plant-a", *artifact(tmp_path, "a2"), alias="challenger")
    assert (a1.number, b1.number, a2.number) == (1, 1, 2)
    assert reg.models() == ["plant-a", "plant-b"]
    assert reg.state("plant-a").aliases == {"champion": 1, "challenger": 2}
    assert reg.state("plant-b").aliases == {"champion": 1}   # a model's first version is its champion
    assert reg.resolve("plant-a").number == 1 and reg.resolve("plant-a@challenger").number == 2
    assert reg.resolve("plant-a@2").artifact == a2.artifact
    folder, manifest = reg.fetch(reg.resolve("plant-b@champion"))
    assert manifest["version"] == "plant-b@1" and (folder / "model.keras").read_bytes() == b"b1" * 100
    assert manifest["features"]["names"] == ["x", "y", "z"] and manifest["schema"] == "dev.x.A@00ff"


def test_every_change_is_in_the_history_with_who_when_and_why(tmp_path):
    reg = ModelRegistry(tmp_path.as_uri())
    reg.publish("m", *artifact(tmp_path, "1"))
    reg.publish("m", *artifact(tmp_path, "2"))
    reg.set_alias("m", CHAMPION, 2, reason="better recall", figures={"recall": 0.9})
    reg.set_alias("m", "challenger", None, reason="promoted")
    reg.delete_version("m", 1, reason="superseded")
    state = reg.state("m")
    assert [(e["action"], e.get("alias"), e.get("version")) for e in state.history] == [
        ("publish", None, 1), ("alias", "champion", 1), ("publish", None, 2), ("alias", "challenger", 2),
        ("alias", "champion", 2), ("alias", "challenger", None), ("delete", None, 1)]
    move = state.history[4]
    assert move["previous"] == 1 and move["reason"] == "better recall" and move["figures"] == {"recall": 0.9}
    assert move["at"].startswith("20") and "@" in move["by"]
    assert state.aliases == {CHAMPION: 2} and sorted(state.versions) == [2]
    assert [e["generation"] for e in state.history] == list(range(1, 8))


def test_what_cannot_be_done_is_refused_and_changes_nothing(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    reg.publish("m", *artifact(tmp_path, "1"))
    before = reg.state("m").generation
    with pytest.raises(RegistryError, match="no model named 'nope'.*models: m"):
        reg.resolve("nope@champion")
    with pytest.raises(RegistryError, match="no alias 'canary'.*champion=1"):
        reg.resolve("m@canary")
    with pytest.raises(RegistryError, match="no version 7"):
        reg.set_alias("m", CHAMPION, 7)
    with pytest.raises(RegistryError, match="is champion: move the alias first"):
        reg.delete_version("m", 1)
    with pytest.raises(RegistryError, match="bad model reference"):
        ModelRef.parse("no spaces@x")
    with pytest.raises(RegistryConflict, match="points at version 1, not 3"):
        reg.set_alias("m", CHAMPION, 1, expect=3)
    assert reg.state("m").generation == before


def test_two_changes_at_the_same_moment_one_wins_the_other_is_told(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    reg.publish("m", *artifact(tmp_path, "1"))
    reg.publish("m", *artifact(tmp_path, "2"))
    seen = reg.state("m").generation
    # both promoters read the same state; the first write wins generation seen + 1
    reg._append("m", {"action": "alias", "alias": CHAMPION, "version": 2, "previous": 1}, seen)
    with pytest.raises(RegistryConflict, match="written at the same moment"):
        reg._append("m", {"action": "alias", "alias": CHAMPION, "version": 1, "previous": 1}, seen)
    state = reg.state("m")
    assert state.aliases[CHAMPION] == 2 and state.generation == seen + 1
    assert len(list((tmp_path / "m" / "log").iterdir())) == seen + 1   # the loser's event is gone


def test_a_damaged_log_is_named(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    reg.publish("m", *artifact(tmp_path, "1"))
    log = sorted((tmp_path / "m" / "log").iterdir())[0]
    log.write_text("{half")
    with pytest.raises(RegistryError, match=f"{log.name} is damaged"):
        reg.state("m")


def test_alias_history_gives_the_fallbacks(tmp_path):
    reg = ModelRegistry(str(tmp_path))
    for tag in "123":
        reg.publish("m", *artifact(tmp_path, tag))
    reg.set_alias("m", CHAMPION, 2)
    reg.set_alias("m", CHAMPION, 3)
    assert reg.state("m").previous_targets(CHAMPION) == [2, 1]


def test_compatibility_is_features_in_order_and_schema():
    manifest = {"features": {"names": ["a", "b"]}, "schema": "dev.x.A@00ff"}
    assert compatible(manifest, ["a", "b"], "dev.x.A@00ff") is None
    assert "another order" in compatible(manifest, ["b", "a"], "dev.x.A@00ff")
    assert "expects features" in compatible(manifest, ["a", "b", "c"], None)
    assert "trained on schema" in compatible(manifest, ["a", "b"], "dev.x.B@1234")


@pytest.mark.s3
def test_s3_registry_round_trip(s3_settings, tmp_path):
    uri = f"s3://{s3_settings.s3.bucket}/registry-{uuid.uuid4().hex[:8]}"
    reg = ModelRegistry(uri, s3_settings.s3)
    reg.publish("m", *artifact(tmp_path, "1"))
    reg.publish("m", *artifact(tmp_path, "2"))
    reg.set_alias("m", CHAMPION, 2, reason="s3")
    again = ModelRegistry(uri, s3_settings.s3)
    assert again.state("m").aliases == {CHAMPION: 2, "challenger": 2}
    folder, manifest = again.fetch(again.resolve("m"), cache_dir=tmp_path / "cache")
    assert manifest["version"] == "m@2" and (folder / "model.keras").read_bytes() == b"2" * 100
    events = [json.loads(p.read_text()) for p in sorted((s3_settings.home / "s3" / "data" / s3_settings.s3.bucket /
                                                          uri.rsplit("/", 1)[1] / "m" / "log").iterdir())]
    assert [e["action"] for e in events] == ["publish", "alias", "publish", "alias", "alias"]
