"""Train the autoencoder straight from the Kafka log and publish a versioned model.

    vigil train --topic telemetry [--from 2026-01-01T00:00:00Z] [--to ...]

No data lake: the job reads the chosen range of every partition of the topic from Kafka (adding
older Parquet history from the object tier with ``--history`` when retention no longer holds it),
decodes it with the schema registered for the topic, and learns what *normal* readings look like.
By default the model reads each reading with its entity's last ``--window`` readings (``--context``:
window, stats or point), imputes a missing sensor from the entity's closest reading, and is an
ensemble of ``--members`` autoencoders sized from the input width:

1. ``--eval-fraction`` of the readings is kept aside as the evaluation range: by default every
   n-th block of ``--eval-block-seconds`` of event time (blocked hold-out: no neighbouring,
   autocorrelated readings on both sides, while slow drifts are covered), or with
   ``--eval-split tail`` simply the newest readings;
2. the rest, minus labelled failures (unless ``--include-labelled``), is split into training rows
   and validation rows (the newest ``--validation-split`` of them); training stops early when the
   validation loss stops improving;
3. the anomaly threshold is ``--threshold-margin`` x the ``--threshold-quantile`` of the
   validation rows' scores (``expected_false_alarm_rate`` in the metrics: the share of validation
   rows above it); with ``--threshold-per entity``, each entity with enough validation readings
   gets its own threshold by the same rule (the manifest's ``thresholds_by_entity``, keyed by
   pseudonym), which the jobs apply to that entity's readings;
4. where the evaluation range has labels, precision, recall, F1 and the false-positive rate are
   computed and kept in the manifest, next to the exact partition/offset ranges read (lineage).

The artifact (model, manifest, report.png) is published to the model registry as the next version
of the model named after the topic (--model-name); a model's first version becomes its champion
(what jobs score with), later ones its challenger until promoted (python -m jobs.models).
"""
from __future__ import annotations

import json
import sys

from connectors.errors import ConnectorError, SchemaError
from connectors.model_store import ModelStoreError
from jobs.training.trainer import TrainOptions, train_from_kafka
from udfs.feature_set import FeatureError
from vigil.commands import command
from vigil.settings import VigilSettings


def run(settings: VigilSettings, options: TrainOptions) -> int:
    manifest = train_from_kafka(settings, options)
    ev = manifest["metrics"].get("evaluation", {})
    print(f"model {manifest['version']} published to {settings.model_store} as {manifest['alias']}")
    from udfs.feature_set import FeatureSet

    metrics = manifest["metrics"]
    epochs = metrics["epochs_run"] if isinstance(metrics["epochs_run"], list) else [metrics["epochs_run"]]
    print(f"  reads {FeatureSet.from_dict(manifest['features']).describe()}; {len(epochs)} member(s), epochs "
          f"{', '.join(map(str, epochs))}")
    rule, expected = manifest["threshold_rule"], metrics["expected_false_alarm_rate"]
    print(f"  threshold {manifest['threshold']:.4g} ({rule['margin']:g} x the {rule['quantile']:g} quantile of "
          f"{expected['validation_readings']} validation readings' scores; "
          f"{expected['validation_readings_above']:.2%} of them above it)")
    if rule.get("per") == "entity":
        own = sorted(manifest.get("thresholds_by_entity", {}).values())
        spread = f": {own[0]:.4g} .. {own[-1]:.4g}" if own else ""
        print(f"  own thresholds for {rule['entities_calibrated']} of {rule['entities']} entities (those with >= "
              f"{rule['entity_min_readings']} validation readings){spread}; the others, and new entities, get the "
              f"fleet's")
    if "precision" in ev:
        print(f"  evaluation on {ev['rows']} readings ({ev['anomalies']} labelled failures): "
              f"precision {ev['precision']:.3f}, recall {ev['recall']:.3f}, F1 {ev['f1']:.3f}, "
              f"false-positive rate {ev['false_positive_rate']:.4f}")
        print(f"  recall by failure mode: {json.dumps({k: round(v, 3) for k, v in ev['recall_by_mode'].items()})}")
    print(f"  report: {settings.model_store.rstrip('/')}/{manifest['model_name']}/artifacts/{manifest['artifact']}"
          f"/report.png")
    return 0


COMMAND = command("train-autoencoder", __doc__, run, options=TrainOptions,
                  settings_flags=("kafka.bootstrap_servers", "model.store"),
                  expected_errors=(ConnectorError, SchemaError, FeatureError, ModelStoreError, ValueError),
                  prog="python -m jobs.train_autoencoder")


def main(argv: list[str] | None = None) -> int:
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())
