"""Run a scoring job: environment, source, the declared outputs, sinks, submission, resumption.

Both scoring jobs run through ``execute()``: it resumes from the previous run's latest retained
checkpoint unless the plan asks for another start (jobs/core/resume.py), submits the statement
set, records the run, and waits for the end of a bounded job (or returns at once under
``flink run -d``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from connectors import flink_kafka
from jobs.core import resume, sinks
from jobs.core.scoring import ScoredTables, ScoringPlan
from stack import flink_home
from vigil.settings import VigilSettings


def execute(settings: VigilSettings, plan: ScoringPlan, build: Callable[[Any], ScoredTables], describe: str) -> int:
    flink_home.activate(settings)
    from jobs.core.flink_env import detached, stream_table_environment

    key = resume.run_key(plan.job, plan.input_topic, plan.group_id)
    resume_from = plan.savepoint
    if resume_from is None and plan.start.mode == "committed":
        resume_from = resume.latest_checkpoint(settings, key)
        if resume_from:
            print(f"resuming from {resume_from}: the last run's latest checkpoint (its offsets and committed "
                  f"output; --from-earliest/--from-timestamp/--from-offsets start elsewhere)", flush=True)
    _, t_env = stream_table_environment(**environment_overrides(plan, resume_from))
    raw = t_env.from_descriptor(flink_kafka.raw_source(plan.input_topic, plan.bootstrap_servers,
                                                       group_id=plan.group_id, bounded=plan.bounded,
                                                       start=plan.start, until_ms=plan.until_ms))
    statements = t_env.create_statement_set()
    sinks.attach(statements, build(raw), plan)
    started = time.monotonic()
    result = statements.execute()
    job_id = str(result.get_job_client().get_job_id())
    resume.remember(settings, key, job_id, t_env.get_config().get("execution.checkpointing.dir", ""),
                    input_topic=plan.input_topic, resumed_from=resume_from)
    print(f"submitted job {job_id}: {plan.input_topic} -> {', '.join(plan.topics.values())}"
          f"{', ' + plan.tier if plan.tier else ''} ({describe}; start: "
          f"{'state of ' + resume_from if resume_from else plan.start.describe()})", flush=True)
    if detached(t_env):  # flink run -d: the job runs on in the cluster, the client is done
        return 0
    result.wait()
    if plan.bounded or plan.until_ms is not None:
        print(f"job {job_id} finished in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def environment_overrides(plan: ScoringPlan, resume_from: str | None) -> dict[str, str | int]:
    """The job's own Flink configuration over flink-conf/'s (keys with ``__`` for ``.``): parallelism,
    name, checkpoint interval, the state to resume from, and the ``--profile``'s settings."""
    from jobs.core.flink_env import checkpointing

    overrides: dict[str, str | int] = {"parallelism__default": plan.parallelism,
                                       "pipeline__name": f"vigil-{plan.job}:{plan.input_topic}", **checkpointing(plan)}
    if resume_from:
        overrides["execution__state-recovery__path"] = resume_from
    overrides.update({key.replace(".", "__"): value for key, value in plan.knobs.items()})
    return overrides
