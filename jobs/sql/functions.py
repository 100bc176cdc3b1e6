"""Vigil's Python UDFs as Flink SQL functions with named, typed arguments: the session's jar.

Flink SQL registers a Python function by name (``CREATE FUNCTION f AS 'module.attr' LANGUAGE
PYTHON``); its signature is then ``f(arg0 => DOUBLE, ...)`` at best (PyFlink's
``PythonScalarFunction`` has no argument names and no custom input type strategy). So a call of
ANOMALY with the wrong columns cannot be refused at planning time with a message naming the
model's features, and a per-model configuration (store, reference, feature list) has no place in
the SQL text.

Here every function of a session is a configured ``udfs`` object (``AnomalyScore`` for one model,
``DecodeTelemetry`` for one topic's schema, ...), pickled exactly as PyFlink pickles it
(``cloudpickle.dumps`` of the function object), and declared to Flink through a one-line Java
subclass of ``dev.vigil.sql.NamedPythonFunction`` (jobs/sql/java/): the class differs from
Flink's only in its type inference, which names the arguments. The planner then refuses a wrong
argument list at planning time (``No match found for function signature ANOMALY_TELEMETRY(...).
Supported signatures are: ANOMALY_TELEMETRY(speed_kmh => DOUBLE, ...)``), ``DESCRIBE FUNCTION``
shows the names, and arguments may be bound by name. Execution is Flink's Python path unchanged.
(``ANOMALY('name@alias', ...)`` extends ``dev.vigil.sql.ModelAnomalyFunction`` instead: its type
inference checks the features of the model its first argument names; ``SqlFunction.base``.)

:func:`build_jar` compiles the classes with ``javac`` (the JDK the project needs anyway; cached
per set of names under ``<home>/sql/classes/``) and writes the jar the init script adds (``ADD JAR``).
"""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JAVA_SOURCES = Path(__file__).parent / "java"
BASE_CLASS = "dev.vigil.sql.NamedPythonFunction"
GENERATED_PACKAGE = "dev.vigil.sql.fn"
_SQL_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")


class SqlFunctionError(RuntimeError):
    """The session's functions could not be built (no javac, a compile error); the message says why."""


@dataclass(frozen=True)
class SqlFunction:
    """One Python UDF as a SQL function: its SQL name, named arguments, result type and the object.

    ``arguments``: (name, Flink SQL type) in call order; ``udf``: a ``ScalarFunction`` instance
    (plain, picklable state; it opens in the worker); ``kind``: PANDAS (vectorized) or GENERAL.
    """

    name: str
    arguments: tuple[tuple[str, str], ...]
    result: str
    udf: Any
    deterministic: bool = True
    kind: str = "PANDAS"
    doc: str = ""
    base: str = BASE_CLASS  # the Java class its one-line subclass extends (its type inference)
    extra: tuple[tuple[str, str], ...] = ()  # further entries of its spec, read by ``base``

    def __post_init__(self) -> None:
        if not _SQL_NAME.match(self.name):
            raise ValueError(f"SQL function name {self.name!r}: upper-case letters, digits and '_', a letter first")
        if self.kind not in ("PANDAS", "GENERAL"):
            raise ValueError(f"function kind must be PANDAS or GENERAL, got {self.kind!r}")

    @property
    def java_class(self) -> str:
        return f"{GENERATED_PACKAGE}.{self.name}"

    def signature(self) -> str:
        """What ``DESCRIBE FUNCTION`` prints: ``NAME(arg => TYPE, ...)``."""
        return f"{self.name}({', '.join(f'{a} => {t}' for a, t in self.arguments)})"

    def spec(self) -> str:
        """The resource NamedPythonFunction reads: a java.util.Properties text (tab-separated lists)."""
        import cloudpickle

        for name, dtype in self.arguments:
            if "\t" in name or "\t" in dtype or "\n" in name or "\n" in dtype:
                raise ValueError(f"{self.name}: argument {name!r} {dtype!r} holds a tab or newline")
        payload = base64.b64encode(cloudpickle.dumps(self.udf)).decode()
        entries = {"name": self.name, "kind": self.kind, "deterministic": str(self.deterministic).lower(),
                   "arguments": "\t".join(a for a, _ in self.arguments),
                   "types": "\t".join(t for _, t in self.arguments), "result": self.result, "payload": payload,
                   **dict(self.extra)}
        return "".join(f"{key}={_properties_escape(value)}\n" for key, value in entries.items())


def _properties_escape(value: str) -> str:
    """A value as java.util.Properties reads it back (backslash escapes; non-ASCII as \\uXXXX)."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch in "=:#!":
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            out.extend(f"\\u{unit:04x}" for unit in _utf16(ch))
        else:
            out.append(ch)
    text = "".join(out)
    return "\\ " + text[1:] if text.startswith(" ") else text


def _utf16(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def _subclass_source(name: str, base: str = BASE_CLASS) -> str:
    return (f"package {GENERATED_PACKAGE};\n\n"
            f"/** Generated by jobs/sql/functions.py: the session's function {name}. */\n"
            f"public final class {name} extends {base} {{\n"
            f"    private static final long serialVersionUID = 1L;\n\n"
            f"    public {name}() {{\n        super(\"{name}\");\n    }}\n}}\n")


def javac() -> str:
    found = shutil.which("javac")
    if not found:
        raise SqlFunctionError("javac is not on PATH: the SQL session's functions are compiled with the JDK "
                               "(OpenJDK 17) the project needs; install it (apt-get install openjdk-17-jdk-headless)")
    return found


def compile_classes(names: list[str] | dict[str, str], flink_lib: Path, cache: Path) -> Path:
    """The compiled base classes and one subclass per name (``{name: base class}``, or names of
    NamedPythonFunction subclasses), in a folder cached by their sources."""
    bases = dict(names) if isinstance(names, dict) else dict.fromkeys(names, BASE_CLASS)
    base_sources = sorted(JAVA_SOURCES.rglob("*.java"))
    digest = hashlib.sha256()
    for path in base_sources:
        digest.update(path.read_bytes())
    for name in sorted(bases):
        digest.update(name.encode() + b"\0" + bases[name].encode() + b"\0")
    folder = cache / digest.hexdigest()[:16]
    if (folder / "ok").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    sources = folder / "src" / Path(*GENERATED_PACKAGE.split("."))
    sources.mkdir(parents=True)
    generated = []
    for name in sorted(bases):
        path = sources / f"{name}.java"
        path.write_text(_subclass_source(name, bases[name]))
        generated.append(path)
    classes = folder / "classes"
    classes.mkdir()
    command = [javac(), "-nowarn", "-encoding", "UTF-8", "--release", "11", "-d", str(classes),
               "-cp", str(flink_lib / "*"), *map(str, base_sources), *map(str, generated)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise SqlFunctionError(f"javac failed ({result.returncode}) compiling the SQL session's functions:\n"
                               f"{(result.stdout + result.stderr).strip()[-3000:]}")
    (folder / "ok").write_text("")
    return folder


def build_jar(functions: list[SqlFunction], jar: Path, flink_lib: Path, cache: Path) -> Path:
    """Write ``jar``: the compiled classes plus each function's spec (its pickled UDF). Returns ``jar``."""
    names = [f.name for f in functions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SqlFunctionError(f"two SQL functions of the session are named {', '.join(duplicates)}")
    compiled = compile_classes({f.name: f.base for f in functions}, flink_lib, cache) / "classes"
    jar.parent.mkdir(parents=True, exist_ok=True)
    tmp = jar.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: vigil jobs/sql/functions.py\n\n")
        for path in sorted(compiled.rglob("*.class")):
            out.write(path, path.relative_to(compiled).as_posix())
        for function in functions:
            out.writestr(f"dev/vigil/sql/functions/{function.name}.properties", function.spec())
    tmp.replace(jar)
    jar.chmod(0o600)  # paths of secret files and the model store are inside; never the secrets themselves
    return jar
