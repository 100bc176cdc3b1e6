"""docs/own-data.md, run: every command of its ``console`` blocks, in order, checked against the output
the page shows. The page is the test's script, so the two cannot drift apart.

The page's convention (also stated at its top):

* a line ``$ command`` in a ```` ```console ```` block is a command, run with bash; a command line
  ending in ``\\`` goes on on the next line;
* the lines after it, up to the next command or the end of the block, are its expected output:
  each must match one line of what the command printed (stdout and stderr), in the same order,
  other printed lines in between allowed; ``...`` inside a line stands for anything and a line of
  just ``...`` marks left-out lines; runs of spaces count as one space;
* every command must exit 0; blocks of other kinds (```` ```sh ````, ```` ```text ````) are not run.

The commands run as a reader runs them, from a folder that looks like the project root, with the
project's venv first on PATH, but without touching the reader's own state: the folder is a
temporary one holding a ``docs`` link to the project's docs (so ``$PWD/.vigil/tier/...`` is
temporary), the model store is its ``.vigil/models`` (``VIGIL_MODEL_STORE``), and the topic
``plant-a`` is renamed to one unique to the run.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vigil.settings import PROJECT_ROOT, VigilSettings

DOC = PROJECT_ROOT / "docs" / "own-data.md"
EXAMPLES = PROJECT_ROOT / "docs" / "examples"
TOPIC = "plant-a"  # the page's topic, renamed per run
BROKER = "127.0.0.1:9092"  # the page's broker address, replaced by the test broker's
S3 = "http://127.0.0.1:9000"  # the page's S3 address, replaced by the settings' endpoint
COMMAND_TIMEOUT_S = 300
FENCE = re.compile(r"^```console[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Step:
    """One command of the page and the output lines it promises."""

    command: str
    line: int  # of the page, for messages
    expected: list[str] = field(default_factory=list)


def steps_of(text: str) -> list[Step]:
    """The commands of every ``console`` block, in page order, with their expected output."""
    steps: list[Step] = []
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        continuing = False
        for offset, line in enumerate(block.group(1).splitlines()):
            if continuing:
                steps[-1].command += "\n" + line
            elif line.startswith("$ "):
                steps.append(Step(line[2:], first_line + offset))
            elif steps and steps[-1].line >= first_line:
                steps[-1].expected.append(line)
            elif line.strip():
                raise ValueError(f"{DOC.name}:{first_line + offset}: output before any command: {line!r}")
            continuing = (continuing or line.startswith("$ ")) and line.endswith("\\")
    return steps


def _squeeze(line: str) -> str:
    return " ".join(line.split())


def pattern(expected: str) -> re.Pattern[str]:
    """An expected line as a regex over a squeezed output line: ``...`` matches anything."""
    return re.compile(".*".join(re.escape(part) for part in _squeeze(expected).split("...")))


def missing_line(expected: list[str], output: str) -> str | None:
    """The first expected line not found in ``output`` (in order), or None when all are there."""
    printed = [_squeeze(line) for line in re.split(r"\r\n|\r|\n", output)]
    position = 0
    for line in expected:
        if not line.strip() or line.strip() == "...":
            continue
        wanted = pattern(line)
        found = next((i for i in range(position, len(printed)) if wanted.fullmatch(printed[i])), None)
        if found is None:
            return line
        position = found + 1
    return None


def renamed(text: str, topic: str, broker: str, s3: str = S3) -> str:
    """The page's topic, broker and S3 addresses replaced by this run's (the tests' services may
    listen on other ports: VIGIL_KAFKA_PORT, VIGIL_S3_PORT)."""
    text = re.sub(rf"(?<![\w.-]){re.escape(TOPIC)}(?![\w-])", topic, text)
    return text.replace(BROKER, broker).replace(S3, s3)


def reader_folder(root: Path) -> Path:
    """A stand-in for the project root: the page's relative paths (docs/...) resolve, its writes
    (.vigil/tier/..., the model store) stay in ``root``."""
    (root / ".vigil" / "models").mkdir(parents=True)
    (root / "docs").symlink_to(PROJECT_ROOT / "docs", target_is_directory=True)
    return root


def reader_environment(root: Path, broker: str) -> dict[str, str]:
    """The reader's shell: the venv first on PATH, this run's model store and broker."""
    env = {k: v for k, v in os.environ.items() if k != "PYFLINK_GATEWAY_DISABLED"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["VIGIL_MODEL_STORE"] = (root / ".vigil" / "models").as_uri()
    env["VIGIL_KAFKA_BOOTSTRAP_SERVERS"] = broker
    return env


def run_step(step: Step, cwd: Path, env: dict[str, str]) -> str:
    """Run one command with bash and return what it printed; fail the test on a non-zero exit."""
    try:
        done = subprocess.run(["bash", "-c", step.command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{DOC.name}:{step.line}: `{step.command}` ran past {COMMAND_TIMEOUT_S} s:\n"
                    f"{_tail(exc.output or '')}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{DOC.name}:{step.line}: `{step.command}` exited {done.returncode}:\n{_tail(done.stdout)}",
                    pytrace=False)
    return done.stdout


def _tail(output: str | bytes, lines: int = 60) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return "\n".join(text.splitlines()[-lines:])


@pytest.mark.kafka
@pytest.mark.flink
def test_the_walkthrough_runs_as_written(kafka_bootstrap, tmp_path):
    topic = f"test.own-data.{uuid.uuid4().hex[:8]}"
    broker = str(kafka_bootstrap)
    root = reader_folder(tmp_path / "project")
    env = reader_environment(root, broker)
    s3 = VigilSettings.load().s3.endpoint
    steps = [Step(renamed(s.command, topic, broker, s3), s.line, [renamed(e, topic, broker, s3) for e in s.expected])
             for s in steps_of(DOC.read_text(encoding="utf-8"))]
    assert steps, f"{DOC} has no ```console commands"
    for step in steps:
        output = run_step(step, root, env)
        absent = missing_line(step.expected, output)
        if absent is not None:
            pytest.fail(f"{DOC.name}:{step.line}: `{step.command}` did not print\n  {absent}\n"
                        f"(or not in the page's order); it printed:\n{_tail(output)}", pytrace=False)


def test_the_sample_file_is_what_its_script_writes():
    """docs/examples/pumps.csv is committed so the page needs no extra step; its script says how it
    was made, and both must agree."""
    spec = importlib.util.spec_from_file_location("make_pumps", EXAMPLES / "make_pumps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (EXAMPLES / "pumps.csv").read_text(encoding="utf-8") == module.render(), \
        "docs/examples/pumps.csv differs from its script's output: run .venv/bin/python docs/examples/make_pumps.py"


def test_the_page_convention_is_read_as_stated():
    """The matcher itself, on a small page: a lax matcher would let the page drift unnoticed."""
    page = ("text\n```console\n$ vigil replay a.csv \\\n    --topic plant-a\nwrote 3 rows to topic 'plant-a'; ...\n"
            "...\ndone\n$ vigil dlq plant-a.dlq\n```\n```sh\n$ not run\n```\n")
    replay, dlq = steps_of(page)
    assert replay.command == "vigil replay a.csv \\\n    --topic plant-a" and replay.line == 3
    assert replay.expected == ["wrote 3 rows to topic 'plant-a'; ...", "...", "done"] and dlq.expected == []
    assert renamed(dlq.command, "t.1", "b:1") == "vigil dlq t.1.dlq"
    assert missing_line(replay.expected, "x\nwrote 3   rows to topic 'plant-a'; schema y\nz\ndone\n") is None
    assert missing_line(replay.expected, "done\nwrote 3 rows to topic 'plant-a'; y\n") == "done"  # order counts
    assert missing_line(["wrote 3 rows"], "wrote 3 rows to topic") == "wrote 3 rows"  # whole lines only
