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
