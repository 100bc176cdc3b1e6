"""The scoring job through the DataStream API: the same outputs, keyed per entity with alert state.

``build(raw, plan)`` keys the raw records by their Kafka key (the entity id), runs
udfs/score_per_entity.ScorePerEntity on each (decode, validate, score in the entity's temporal
context, and the alarm rule ``plan.alarm`` on the entity's keyed state), and returns the three
outputs as tables shaped by the record contract, so jobs/core/sinks.py attaches the same sinks
as for the Table job. Derived features are added by the same SQL expressions as in the Table job
(jobs/core/scoring.with_derived).
"""
from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.table import Table

from jobs.core.scoring import ScoredTables, ScoringPlan, with_derived


def build(raw: Table, plan: ScoringPlan) -> ScoredTables:
    from udfs.anomaly_score import ModelHandle
    from udfs.score_per_entity import ScorePerEntity

    out = plan.outputs
    t_env = raw._t_env
    rows = t_env.to_data_stream(raw)
    handle = ModelHandle(plan.model_store, plan.model_ref, features=plan.features, schema=plan.schema_id,
                         fallback=plan.model_number, refresh_seconds=plan.model_refresh_seconds, s3=plan.s3,
                         context=plan.context)
    alerts_tag = OutputTag("alerts", out.alerts.type_info())
    dlq_tag = OutputTag("dead-letters", out.dead_letters.type_info())
    scorer = ScorePerEntity(plan.schema, out, plan.secret_file, plan.suite, handle, plan.input_topic, plan.alarm,
                            plan.context, alerts_tag, dlq_tag)
    scored = (rows.key_by(lambda r: bytes(r["record_key"] or b"").decode("utf-8", "replace"), key_type=Types.STRING())
              .process(scorer, output_type=out.scored_base.type_info())
              .name("score-per-entity").uid("score-per-entity"))
    return ScoredTables(
        scored=out.scored.project(with_derived(t_env.from_data_stream(scored), out)),
        alerts=out.alerts.project(t_env.from_data_stream(scored.get_side_output(alerts_tag))),
        dead_letters=out.dead_letters.project(t_env.from_data_stream(scored.get_side_output(dlq_tag))),
    )
