"""Every command's flags come from its settings model: --help names each one with its default."""
from __future__ import annotations

import importlib
import re

import pytest

from vigil.commands import Command, Group, flags_of, settings_flags

COMMANDS = [
    "jobs.simulate_fleet", "jobs.replay_file", "jobs.train_autoencoder", "jobs.score_events",
    "jobs.score_events_stream", "jobs.run_sql", "jobs.run_demo", "jobs.enrich_telemetry",
    "connectors.topics:TOPICS", "connectors.mqtt_bridge", "stack.__main__:STACK",
    "benchmarks.pipeline.run", "benchmarks.score_function", "benchmarks.validation_cost",
    "jobs.models:MODELS", "jobs.dead_letters", "jobs.dashboard", "jobs.register_topic", "vigil.backfill",
    "jobs.monitor", "jobs.retrain", "jobs.shadow",
]


def declared(spec: str) -> Command | Group:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name or "COMMAND")


def leaves(cmd: Command | Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Command]]:
    if isinstance(cmd, Group):
        return [leaf for name, sub in cmd.commands.items() for leaf in leaves(sub, (*path, name))]
    return [(path, cmd)]


ALL = [(spec, path, cmd) for spec in COMMANDS for path, cmd in leaves(declared(spec))]


@pytest.mark.parametrize("spec, path, cmd", ALL, ids=[f"{s}:{' '.join(p)}" for s, p, _ in ALL])
def test_help_names_every_flag_with_what_it_does_and_its_default(spec, path, cmd, capsys):
    top = declared(spec)
    assert top.main([*path, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # click wraps lines
    own = flags_of(cmd.options) if cmd.options else []
    for flag in own + settings_flags(cmd.settings_flags, None):
        shown = flag.metavar or flag.dest.upper() if flag.argument else flag.name
        assert shown.split()[0] in text, f"{flag.name} missing from the help of {spec} {path}"
        assert flag.help and " ".join(flag.help.split()) in text, f"{flag.name} has no help text"
        if flag.argument or flag.settings or flag.kind is bool or flag.many:
            continue
        if flag.default not in (None, "", [], {}, ()) or isinstance(flag.show_default, str):
            assert re.search(re.escape(" ".join(flag.help.split())) + r" \[default: [^\]]+\]", text), \
                f"{flag.name} of {spec} {path} does not show its default"


def test_bad_flags_and_values_are_one_line_errors(capsys):
    sim = declared("jobs.simulate_fleet")
    assert sim.main(["--no-such-flag"]) == 2
    assert sim.main(["--events", "many"]) == 2
    assert sim.main(["--failure-rate", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "--no-such-flag" in err[0] and "--events" in err[1] and "2.0" in err[2]


def test_a_bad_environment_is_reported_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setenv("VIGIL_KAFKA_PORT", "not-a-port")
    assert declared("jobs.simulate_fleet").main(["--events", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: kafka.port:") and len(err.strip().splitlines()) == 1


def test_an_expected_error_of_a_nested_sub_command_is_one_line(capsys):
    """``vigil score table`` (a group in a group) reports what its job expects in one line, as
    ``python -m jobs.score_events`` does, never a traceback."""
    from vigil.cli import main

    code = main(["score", "table", "--input", "t", "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: no Kafka broker answers at 127.0.0.1:1"), err
    assert "Traceback" not in err and err.count("\n") == 1
