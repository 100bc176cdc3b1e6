"""Detection quality on real data, through the user's path: replay -> train from Kafka -> score in Flink.

    python -m benchmarks.quality [--quick] [--seeds 3] [--out .vigil/benchmarks]

Each dataset is written to a Kafka topic the way a user would (``jobs.replay_file`` for a file,
``jobs.simulate_fleet`` for the simulator), each candidate model is trained from that topic's log
(``jobs.training``) on the first part of its time range only, and the Table scoring job
(``jobs.score_events``, bounded, on the local mini-cluster) scores the whole topic. The figures
come from the scored topic, on the readings after the training range, which no model saw while
it was trained. The shipped defaults were chosen on these same NAB files, so the figures here
are not held out from that choice; benchmarks/README.md gives the selection's leave-one-file-out
figures (settings chosen on four files, measured on the fifth), which are.

Datasets: the five real NAB series in ../shared/datasets/nab (labelled anomaly windows; protocol:
train on the first 15% of each file), and the simulator (default failure modes, and the hard
ones: gradual sensor drift, a stuck sensor, and a non-fault regime change as false-alarm bait).

Per dataset and candidate it prints point-wise F1, false-alarm rate (false alarms / normal
readings), missed-alarm rate (missed / anomalous readings), the share of labelled windows with at
least one alarm and the median detection delay, for the per-reading flag and for alert
hysteresis settings (udfs/alert_rules.Hysteresis, replayed on the job's flags: the same rule the
jobs run, tested to give the same events), and writes JSON.
"""
