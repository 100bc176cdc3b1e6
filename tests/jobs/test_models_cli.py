"""``vigil models show``: what a model reads, how its threshold was set, its size; no raw arrays."""
from __future__ import annotations

from jobs import models
from tests.trained_model import REF


def test_show_says_what_the_model_reads_and_how_its_threshold_was_chosen(trained_model, capsys):
    store, manifest = trained_model
    assert models.main(["show", REF, "--model-store", store]) == 0
    out = capsys.readouterr().out
    window = manifest["features"]["window"]
    assert f"reads       the entity's last {window} readings of 17 sensor(s)" in out
    assert f"{manifest['threshold_rule']['margin']:g} x the 0.99 quantile of the validation scores" in out
    assert '"members": 3' in out and "error_scale" not in out


def test_history_lists_every_event_of_a_model(trained_model, capsys, tmp_path):
    """A publish event has no alias, an alias move no ``figures``: each is told in its own words."""
    import shutil

    store = str(tmp_path / "models")
    shutil.copytree(trained_model[0], store)  # the session's store stays as other tests expect it
    assert models.main(["alias", "telemetry", "challenger", "1", "--model-store", store, "--reason", "try it"]) == 0
    capsys.readouterr()
    assert models.main(["history", "telemetry", "--model-store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("published version 1" in line for line in lines)
    assert any("challenger: None -> 1" in line and "(try it)" in line for line in lines)
