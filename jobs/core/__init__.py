"""The scoring core that the job modules wire up (jobs/*.py are entry points, this is their library).

* ``scoring``: the scoring job's options, the client-side plan (what it reads, with which model and
  suite, where it writes) and ``build(raw, plan)``: the Table API declaration of decode ->
  validate -> score -> route, returning the declared outputs;
* ``scoring_stream``: the same outputs from the DataStream API, keyed per entity with the alert
  rule's state;
* ``sinks``: the Kafka sinks and the Parquet tier, attached to either job's outputs;
* ``flink_env``: Flink environments configured from the project's Flink home.

Nothing here imports a job module; every job module imports from here.
"""
