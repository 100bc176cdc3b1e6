"""The pipeline benchmark's report: the markdown table and the method text."""
from __future__ import annotations

from typing import Any

from benchmarks.pipeline.settings import KNOB_KEYS


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Pipeline benchmark ({result['mode']}, N={result['events']:,}, {result['host']}, "
             f"{result['cpus']} CPUs); events/s; headline = output-span rate of the 2N run unless noted.", "",
             "| variant | what | N s | 2N s | wall ev/s | marginal ev/s | output-span ev/s | headline ev/s |",
             "|---|---|---|---|---|---|---|---|"]
    for v in result["variants"].values():
        lines.append(f"| {v['name']} | {v['description']} | {fmt(v['seconds_n'], 1)} | {fmt(v['seconds_2n'], 1)} "
                     f"| {fmt(v['wall_rate'])} | {fmt(v['marginal_rate'])} | {fmt(v['span_rate'])} "
                     f"| **{fmt(v['rate'])}** ({v['method']}) |")
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {fmt(v, 2)} |" for k, v in result["ratios"].items()]
    if result["sweep"]:
        lines += ["", "Python UDF knobs for (d), one 2N run each (arrow batch / bundle size / bundle time ms; the configured setting is (d) itself):", "",
                  "| setting | marginal ev/s | output-span ev/s | wall ev/s | headline ev/s |", "|---|---|---|---|---|"]
        for v in result["sweep"]:
            k = v["knobs"]
            tag = " (best)" if v["name"] == result["best_knobs"] else ""
            lines.append(f"| {k[KNOB_KEYS[0]]} / {k[KNOB_KEYS[1]]} / {k[KNOB_KEYS[2]]}{tag} | {fmt(v['marginal_rate'])} "
                         f"| {fmt(v['span_rate'])} | {fmt(v['wall_rate'])} | {fmt(v['rate'])} |")
    if result["latency"]:
        probe = result.get("capacity_probe")
        head = "Event-to-alert latency of the real job (unbounded)"
        if probe:
            head += (f"; half load = half of the {probe['sustained_rate']:,.0f} events/s e-full sustained in a "
                     f"capacity probe fed {probe['rate']:,.0f} events/s")
        probe_jvm = result.get("capacity_probe_jvm")
        if probe_jvm:
            head += (f"; for e-full-jvm half of the {probe_jvm['sustained_rate']:,.0f} events/s it sustained fed "
                     f"{probe_jvm['rate']:,.0f} events/s")
        lines += ["", head + ":", "",
                  "| job | sinks | python knobs | load ev/s | events | alerts | p50 ms | p99 ms | max ms "
                  "| visible p50 ms | visible p99 ms | backlog at end |", "|---" * 12 + "|"]
        for r in result["latency"]:
            sinks = f"exactly-once, checkpoint {r['interval_ms'] / 1000:g} s" if r["exactly_once"] else "at-least-once"
            knobs = ", ".join(f"{k.rsplit('.', 2)[-2]}.{k.rsplit('.', 1)[-1]}={v}" for k, v in (r["knobs"] or {}).items())
            a, s = r["alert_timestamp"], r["alert_visible"]
            lines.append(f"| {r.get('variant', 'e-full')} | {sinks} | {knobs or 'configured'} "
                         f"| {fmt(r['achieved_rate'])} | {r['events_in_window']:,} "
                         f"| {r['alerts']:,} | {fmt(a['p50_ms'])} | {fmt(a['p99_ms'])} | {fmt(a['max_ms'])} "
                         f"| {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} "
                         f"| {r['backlog_at_end']:,}{' (overloaded)' if r['overloaded'] else ''} |")
        for r in result["latency"]:
            for e in r.get("earlier_attempts", []):
                lines.append(f"\nAn earlier attempt at {e['rate']:,.0f} events/s was overloaded (sustained "
                             f"{e['sustained_rate']:,.0f}/s, backlog {e['backlog_at_end']:,}); repeated at half "
                             f"the sustained rate.")
    lines += ["", "| goal | measured | met? |", "|---|---|---|"]
    for g in result["goals"]:
        met = "-" if g["met"] is None else ("yes" if g["met"] else "no")
        digits = 0 if g["measured"] is not None and g["measured"] > 100 else 2
        lines.append(f"| {g['goal']} | {fmt(g['measured'], digits)} | {met} |")
    return "\n".join(lines)


METHOD = (
    "Flink variants run bounded (scan.bounded.mode=latest-offset, parallelism 1 unless noted, checkpointing "
    "off, at-least-once sinks) on input topics pre-filled once with N and 2N events (3 partitions, the simulated "
    "records cycled), after one unmeasured warm-up job in the same JVM. Three rates per variant: wall = 2N / time "
    "from submission to finish of the 2N run, nothing subtracted; marginal = N / (t(2N) - t(N)), which removes the "
    "fixed cost of submitting the job and starting Python workers; output-span = the records between the 5th and "
    "95th percentile of the 2N run's output Kafka timestamps (stamped by Flink's producer when it writes them) "
    "divided by that span of time. The headline rate, used in ratios and goals, is output-span (falling back to "
    "marginal, then wall): it is measured inside one run, while job start-up varies by seconds between runs on a "
    "shared machine, which the marginal rate counts as processing time. Output-span needs many Arrow batches "
    "per run (2N >> python.fn-execution.arrow.batch.size); at smoke/quick sizes every rate is indicative only. "
    "(a) and (f) are timed from the first call to the last acknowledgement; (g) is the best of repeated calls. "
    "Latency: the real job (score_events.build with the suite, at-least-once sinks) runs unbounded with "
    "checkpointing at the configured interval; input is produced at half load = half the rate the unbounded job "
    "sustained in a capacity probe fed at e-full's bounded rate (half of (d) is several times what the real job "
    "sustains; an overloaded run is repeated at half its sustained rate), each record's Kafka timestamp set to "
    "wall-clock time at produce; latency = the alert's Kafka timestamp (the sink's write time) - the input "
    "record's, over inputs produced in the measured window (after 3 s of settling). 'visible' = when a "
    "read_committed consumer received the alert - the input timestamp. With exactly-once sinks alerts become "
    "visible only when a checkpoint commits, so visible latency is bounded below by the checkpoint interval."
)
