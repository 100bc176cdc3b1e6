"""Command lines generated from the settings models, so flags, defaults and ``--help`` cannot drift.

A command is declared once::

    class ScoreOptions(Options):
        input_topic: str = option("telemetry", "Kafka topic to score", flag="--input")
        bounded: bool = option(False, "stop at the offsets that were latest at start")

    COMMAND = command("score-events", __doc__, run, options=ScoreOptions,
                      settings_flags=("kafka.bootstrap_servers", "model.store"))

Every field of the options model becomes a flag (``--kebab-case`` of its name unless ``flag=``
says otherwise) with its type, its one default and its help text; settings flags come from
:data:`SETTINGS_FLAGS`, which name fields of :class:`vigil.settings.VigilSettings` (their help
shows the value in effect, environment and config file included). Frozen dataclasses work as
options models too (``dataclasses.field(metadata={"help": ...})``).

:func:`run` turns every expected failure into one ``error: ...`` line on stderr and an exit code
(2: bad flags, options or settings; 1: an error the command declared as expected, such as an
unreachable broker); nothing raises SystemExit, so ``main(argv)`` is callable from tests.
"""
from __future__ import annotations

import dataclasses
import enum
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigil.settings import SettingsError, VigilSettings, describe_validation_error


class Options(BaseModel):
    """Base of every command's own options: frozen, typed, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class OptionsError(ValueError):
    """A command's options are invalid; the message names the flag."""


def option(default: Any, help: str, *, flag: str | None = None, parse: Callable[[str], Any] | None = None,
           metavar: str | None = None, argument: bool = False, many: bool = False,
           show_default: bool | str = True, **field: Any) -> Any:
    """A pydantic Field that also describes its command-line flag.

    ``parse`` turns the flag's text into the field's value (for lists, maps, times);
    ``argument=True`` makes it positional (``many=True``: any number of them, a list);
    ``show_default`` may be a text for computed defaults.
    """
    extra = {"cli": {"flag": flag, "parse": parse, "metavar": metavar, "argument": argument, "many": many,
                     "show_default": show_default}}
    return Field(default, description=help, json_schema_extra=extra, **field)


# Settings every command may expose, by their path in VigilSettings: flag and help.
SETTINGS_FLAGS: dict[str, tuple[str, str]] = {
    "kafka.bootstrap_servers": ("--bootstrap-servers", "Kafka bootstrap servers, host:port[,host:port]"),
    "model.store": ("--model-store", "model store: a path, file:// URI or s3://bucket/prefix"),
    "tier": ("--tier", "object tier for Parquet history: file:///path or s3a://bucket/prefix; 'none' disables it"),
    "pseudonym.secret_file": ("--pseudonym-secret-file",
                              "file holding the secret behind entity-id pseudonyms (or set VIGIL_PSEUDONYM_SECRET)"),
    "mqtt.host": ("--mqtt-host", "MQTT broker host"),
    "mqtt.port": ("--mqtt-port", "MQTT broker port"),
}
CONFIG_FLAG = "--config"


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag (or positional argument) and the field it fills."""

    dest: str
    name: str
    help: str
    default: Any
    kind: Any
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    argument: bool = False
    many: bool = False
    required: bool = False
    show_default: bool | str = True
    settings: bool = False

    def click_param(self) -> click.Parameter:
        if self.argument:
            return click.Argument([self.dest], type=self._click_type(), required=self.required and not self.many,
                                  nargs=-1 if self.many else 1, metavar=self.metavar)
        if self.kind is bool and not self.settings:
            decls = [f"{self.name}/--no-{self.name[2:]}" if self.default else self.name, self.dest]
            return click.Option(decls, is_flag=True, default=bool(self.default),
                                help=self._help("on" if self.default else False))
        if self.many:
            return click.Option([self.name, self.dest], type=self._click_type(), multiple=True,
                                help=self._help(self._default_text()), metavar=self.metavar, show_default=False)
        return click.Option([self.name, self.dest], type=self._click_type(), required=self.required,
                            default=None if self.settings else self._shown(self.default),
                            help=self._help(self._default_text()), metavar=self.metavar, show_default=False)

    def _help(self, default: bool | str) -> str:
        return f"{self.help}  [default: {default}]" if default else self.help

    def _click_type(self) -> click.ParamType:
        if self.parse is not None:
            return click.STRING
        choices = _choices(self.kind)
        if choices:
            return click.Choice([str(c) for c in choices])
        return {int: click.INT, float: click.FLOAT, Path: click.Path(path_type=str)}.get(self.kind, click.STRING)

    def _shown(self, value: Any) -> Any:
        if value is None or self.parse is None:
            return value.value if isinstance(value, enum.Enum) else value
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        if isinstance(value, dict):
            return ",".join(f"{k}:{v}" for k, v in value.items())
        return str(value)

    def _default_text(self) -> bool | str:
        if isinstance(self.show_default, str):
            return self.show_default
        if self.default is None or self.default == "" or self.show_default is False:
            return False
        if self.many and isinstance(self.default, (list, tuple)):
            return " ".join(map(str, self.default))
        return str(self._shown(self.default))


def _choices(kind: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(kind) is typing.Literal:
        return typing.get_args(kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return tuple(m.value for m in kind)
    return None


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``Literal[...]`` stays; other generics -> their origin."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    if origin is typing.Literal:
        return annotation
    return origin or annotation


def _flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def flags_of(model: type) -> list[Flag]:
    """The flags of an options model (pydantic model or dataclass), in declaration order."""
    flags = []
    if isinstance(model, type) and issubclass(model, BaseModel):
        hints = typing.get_type_hints(model)
        for name, info in model.model_fields.items():
            cli = (info.json_schema_extra or {}).get("cli", {}) if isinstance(info.json_schema_extra, dict) else {}
            required = info.is_required()
            flags.append(Flag(
                dest=name, name=cli.get("flag") or _flag_name(name), help=info.description or "",
                default=None if required else info.get_default(call_default_factory=True),
                kind=_base_type(hints[name]), parse=cli.get("parse"), metavar=cli.get("metavar"),
                argument=bool(cli.get("argument")), many=bool(cli.get("many")), required=required,
                show_default=cli.get("show_default", True)))
    elif dataclasses.is_dataclass(model):
        hints = typing.get_type_hints(model)
        for f in dataclasses.fields(model):
            meta = f.metadata
            if meta.get("cli") is False:
                continue
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
            flags.append(Flag(
                dest=f.name, name=meta.get("flag") or _flag_name(f.name), help=meta.get("help", ""),
                default=default, kind=_base_type(hints[f.name]), parse=meta.get("parse"),
                metavar=meta.get("metavar"), argument=bool(meta.get("argument")),
                required=required and not meta.get("optional", False),
                show_default=meta.get("show_default", True)))
    else:
        raise TypeError(f"options must be a pydantic model or a dataclass, got {model!r}")
    return flags


def settings_flags(paths: Sequence[str], current: VigilSettings | None) -> list[Flag]:
    """Flags for settings fields; their help shows the value in effect (``current``)."""
    out = []
    for path in paths:
        if path not in SETTINGS_FLAGS:
            raise KeyError(f"no settings flag for {path!r}; add it to vigil.commands.SETTINGS_FLAGS")
        name, help_text = SETTINGS_FLAGS[path]
        shown: bool | str = False
        if current is not None:
            value: Any = current
            for part in path.split("."):
                value = getattr(value, part)
            shown = str(value)
        out.append(Flag(dest=path.replace(".", "__"), name=name, help=help_text, default=None,
                        kind=str if path != "mqtt.port" else int, show_default=shown, settings=True))
    return out


@dataclasses.dataclass
class Command:
    """A declared command: what it runs, with which options and settings flags."""

    name: str
    doc: str
    run: Callable[[VigilSettings, Any], int]
    options: type | None = None
    settings_flags: tuple[str, ...] = ()
    expected_errors: tuple[type[BaseException], ...] = ()
    prog: str | None = None

    def click_command(self, current: VigilSettings | None = None) -> click.Command:
        """The click command (flags generated now: their help shows the settings in effect)."""
        own = flags_of(self.options) if self.options is not None else []
        params = [f.click_param() for f in own + settings_flags(self.settings_flags, current)]
        params.append(click.Option([CONFIG_FLAG, "config"], type=click.Path(path_type=str), default=None,
                                   help="settings file (TOML or YAML, sections as in vigil/settings.py); "
                                        "also VIGIL_CONFIG"))

        def callback(**values: Any) -> int:
            return self._invoke(own, values)

        arguments = [f for f in own if f.argument]
        doc = _click_doc(self.doc)
        if arguments:
            lines = [f"  {(f.metavar or f.dest.upper()):<16} {f._help(f._default_text())}" for f in arguments]
            doc += "\n\n\b\nArguments:\n" + "\n".join(lines)
        return click.Command(self.name, params=params, callback=callback, help=doc,
                             context_settings={"max_content_width": 110, "help_option_names": ["-h", "--help"]})

    def _invoke(self, own: list[Flag], values: dict[str, Any]) -> int:
        inherited = dict((click.get_current_context().find_root().obj or {}))  # a group's own flags
        config = values.pop("config", None) or inherited.pop("config", None)
        paths = {p.replace(".", "__"): p for p in self.settings_flags}
        overrides = {**inherited, **{paths[k]: v for k, v in values.items() if k in paths and v is not None}}
        settings = VigilSettings.load(overrides, config_file=config)
        options = None
        if self.options is not None:
            options = build_options(self.options, own, {f.dest: values[f.dest] for f in own})
        return int(self.run(settings, options) or 0)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` (default: sys.argv[1:]), run, return the exit code; never raises SystemExit."""
        return _run_click(self, argv, self.prog or self.name, self.expected_errors)


def _run_click(declared: Command | Group, argv: Sequence[str] | None, prog: str,
               expected: tuple[type[BaseException], ...]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = declared.click_command(_settings_for_help())
        return int(command.main(args=argv, prog_name=prog, standalone_mode=False) or 0)
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.UsageError as exc:
        print(f"error: {exc.format_message()} (see {prog} --help)", file=sys.stderr)
        return 2
    except (SettingsError, OptionsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (click.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _click_doc(doc: str) -> str:
    """A docstring for click's help: indented blocks and bullet lists kept as written (``\\b``)."""
    paragraphs = (doc or "").strip().split("\n\n")
    out = []
    for text in paragraphs:
        lines = text.splitlines()
        keep = any(line.startswith((" ", "*", "-")) for line in lines) or len(lines) > 1 and any(
            line.lstrip().startswith(("*", "-", "python ", "make ")) for line in lines)
        out.append("\b\n" + text if keep else text)
    return "\n\n".join(out)


def _settings_for_help() -> VigilSettings | None:
    try:
        return VigilSettings.load()
    except SettingsError:
        return None  # a bad environment is reported when the command runs


def build_options(model: type, flags: list[Flag], values: dict[str, Any]) -> Any:
    """The options object from parsed flag values; OptionsError names the flag of a bad value."""
    by_dest = {f.dest: f for f in flags}
    parsed: dict[str, Any] = {}
    for dest, value in values.items():
        flag = by_dest[dest]
        try:
            if flag.many:
                items = [flag.parse(v) if flag.parse is not None else v for v in value or ()]
                if not items:
                    value = None
                elif isinstance(items[0], dict):  # repeated KEY=VALUE flags build one map
                    value = {k: v for item in items for k, v in item.items()}
                else:
                    value = items
            elif value is not None and flag.parse is not None and isinstance(value, str):
                value = flag.parse(value)
        except (ValueError, TypeError) as exc:
            raise OptionsError(f"{flag.name}: {exc}") from None
        if value is None and not flag.required and flag.default is not None:
            continue  # keep the model's own default
        parsed[dest] = value
    try:
        return model(**parsed)
    except ValidationError as exc:
        names = {f.dest: f.name for f in flags}
        message = describe_validation_error(exc)
        for dest, name in names.items():
            message = message.replace(f"{dest}: ", f"{name}: ")
        raise OptionsError(message) from None
    except ValueError as exc:  # a dataclass's own validation
        raise OptionsError(str(exc)) from None


def command(name: str, doc: str | None, run: Callable[[VigilSettings, Any], int], *, options: type | None = None,
            settings_flags: Sequence[str] = (), expected_errors: Sequence[type[BaseException]] = (),
            prog: str | None = None) -> Command:
    """Declare a command (see the module docstring)."""
    return Command(name, doc or "", run, options, tuple(settings_flags), tuple(expected_errors), prog)


# --- small parsers for flag values -----------------------------------------------------------------

def comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"expected a comma-separated list, got {text!r}")
    return items


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in comma_list(text)]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def partition_offsets(text: str) -> dict[int, int]:
    """``0:120,1:0`` -> {0: 120, 1: 0}."""
    try:
        return {int(p): int(o) for p, o in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise ValueError(f"offsets must look like 0:120,1:0 - got {text!r}") from None


@dataclasses.dataclass
class Group:
    """Sub-commands under one name (``python -m stack up``); each is a :class:`Command` or a Group."""

    name: str
    doc: str
    commands: dict[str, Command | Group]
    prog: str | None = None
    settings_flags: tuple[str, ...] = ()

    def click_command(self, current: VigilSettings | None = None) -> click.Group:
        paths = {p.replace(".", "__"): p for p in self.settings_flags}

        def remember(**values: Any) -> None:
            # flags given before the sub-command apply to it (the sub-command's own flags win)
            ctx = click.get_current_context()
            root = ctx.find_root()
            root.obj = {**(root.obj or {}), **{paths[k]: v for k, v in values.items() if k in paths and v is not None}}

        params = [f.click_param() for f in settings_flags(self.settings_flags, current)]
        group = click.Group(self.name, help=_click_doc(self.doc), params=params, callback=remember,
                            context_settings={"max_content_width": 110, "help_option_names": ["-h", "--help"]})
        for name, sub in self.commands.items():
            cmd = sub.click_command(current)
            cmd.name = name
            group.add_command(cmd, name)
        return group

    def main(self, argv: Sequence[str] | None = None) -> int:
        return _run_click(self, argv, self.prog or self.name, self._expected())

    def _expected(self) -> tuple[type[BaseException], ...]:
        found: list[type[BaseException]] = []
        for sub in self.commands.values():
            found.extend(sub._expected() if isinstance(sub, Group) else sub.expected_errors)
        return tuple(dict.fromkeys(found))


def group(name: str, doc: str | None, commands: dict[str, Command | Group], *, prog: str | None = None,
          settings_flags: Sequence[str] = ()) -> Group:
    """Declare a group of commands; ``settings_flags`` may also be given before the sub-command."""
    return Group(name, doc or "", commands, prog, tuple(settings_flags))


def key_values(text: str) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"expected KEY=VALUE[,KEY=VALUE], got {text!r}")
    return {k.strip(): v.strip() for k, v in pairs}


class LazyGroup:
    """Sub-commands named by ``"module:ATTR"`` and imported only when used (a fast ``--help``).

    ``commands``: {name: (target, one-line help)}; a target is a :class:`Command`, a
    :class:`Group` or another LazyGroup, found as ``ATTR`` of ``module``.
    """

    def __init__(self, name: str, doc: str, commands: dict[str, tuple[str, str]], *, prog: str | None = None) -> None:
        self.name, self.doc, self.commands, self.prog = name, doc, commands, prog

    def resolve(self, name: str) -> Command | Group | LazyGroup:
        import importlib

        module, _, attr = self.commands[name][0].partition(":")
        return getattr(importlib.import_module(module), attr or "COMMAND")

    def click_command(self, current: VigilSettings | None = None) -> click.Group:
        lazy = self

        class _Lazy(click.Group):
            def list_commands(self, ctx: click.Context) -> list[str]:
                return list(lazy.commands)

            def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
                if cmd_name not in lazy.commands:
                    return None
                cmd = lazy.resolve(cmd_name).click_command(current)
                cmd.name = cmd_name
                cmd.short_help = lazy.commands[cmd_name][1]
                return cmd

            def format_commands(self, ctx: click.Context, formatter: Any) -> None:
                rows = [(name, help_) for name, (_, help_) in lazy.commands.items()]
                with formatter.section("Commands"):
                    formatter.write_dl(rows)

        return _Lazy(self.name, help=_click_doc(self.doc),
                     context_settings={"max_content_width": 110, "help_option_names": ["-h", "--help"]})

    def main(self, argv: Sequence[str] | None = None) -> int:
        argv = list(sys.argv[1:] if argv is None else argv)
        return _run_click(self, argv, self.prog or self.name, self._expected(argv))

    def _expected(self, argv: Sequence[str] = ()) -> tuple[type[BaseException], ...]:
        """The expected errors of the one sub-command ``argv`` runs (through nested groups:
        ``vigil score table`` reports a missing model in one line, as ``python -m jobs.score_events``)."""
        if not argv or argv[0] not in self.commands:
            return ()
        target = self.resolve(argv[0])
        if isinstance(target, LazyGroup):
            return target._expected(argv[1:])
        return target._expected() if isinstance(target, Group) else target.expected_errors
