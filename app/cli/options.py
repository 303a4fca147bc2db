"""The flags that set a setting, declared once, and the one way a command gets its settings from them.

Each command used to repeat the same block of options and build its settings from ``locals()``: a parameter
misspelt in one command was silently no setting at all, and the help texts had drifted from the code
(``--head`` listed three of five heads; ``--batch-size`` and the settings disagreed on the CUDA default).
Here:

- ``FLAGS`` holds one flag per setting a command may take, named by the Settings field it sets; its help is
  the field's description, with its CBIR_ variable and default; where it lists what models/ holds (the
  heads and backbones registered, the batch size chosen by device) the names are filled in from there
  when the help is shown. So help cannot drift from the code.
- ``@command(group, DATABASE, ENCODER, "batch_size")`` gives a command those flags. A name that is no flag
  fails at import, naming the known ones; so does a parameter of the command's own named like a setting
  (it would be taken for one and is not). The command receives ``settings`` (the environment with the
  flags given) and, if it asks, ``given`` (the flags' values, None where not given).
- Errors raised by the command (or by a bad setting) print one line and exit non-zero (app/cli/exits.py).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_core import PydanticUndefined
from pydantic_settings import SettingsError
from typer.core import TyperCommand
from typer.core import _click as click  # typer's own click, which its commands are made of

from app.cli.exits import friendly_errors
from app.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

# What a command may ask for besides its own options: filled in by `command`, not flags.
INJECTED = ("settings", "given")


def _head_names() -> list[str]:
    from models.heads import available_heads

    return available_heads()


def _backbone_names() -> list[str]:
    from models.backbones import available_backbones

    return available_backbones()


# Help texts that list what models/ holds (a registry's names, a default chosen by device) say so with one
# of these marks, filled in when a command's help is shown: importing models, so torch, which `cbir --help`
# and the help of the commands that need no model never do (tests/app/test_cli_startup.py).
FROM_MODELS: dict[str, Callable[[], list[str]]] = {
    "{heads}": _head_names,
    "{backbones}": _backbone_names,
}


@dataclass(frozen=True)
class Flag:
    """A command-line flag for the setting ``setting``."""

    setting: str
    names: tuple[str, ...] = ()  # default: --the-setting-name
    help: str | None = None  # only for settings without a description in app/config.py
    options: Mapping[str, Any] = field(default_factory=dict)  # typer.Option's own (min, max, …)

    @property
    def annotation(self) -> Any:
        """``Annotated[T | None, typer.Option(...)]``: None means "not given, keep the environment's"."""
        option = typer.Option(*(self.names or (f"--{self.setting.replace('_', '-')}",)), **self.options)
        option.help = flag_help(self.setting, self.help)
        return Annotated[_flag_type(self.setting) | None, option]


PLAIN_TYPES: tuple[type, ...] = (str, int, float, bool, Path)


def _flag_type(setting: str) -> type:
    """The field's own type (a Literal's choices are checked by Settings, which names the flag)."""
    annotation: Any = Settings.model_fields[setting].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return next((plain for plain in PLAIN_TYPES if annotation is plain), str)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def flag_help(setting: str, text: str | None = None) -> str:
    """The field's description (or ``text``), then where else it is set and its default."""
    try:
        declared = Settings.model_fields[setting]
    except KeyError:
        raise ValueError(f"{setting!r} is no setting of app/config.py's Settings") from None
    described = text or declared.description
    if not described:
        raise ValueError(f"setting {setting} has no description in app/config.py: give its Flag a help text")
    default = declared.default
    shown = "" if default is None or default is PydanticUndefined else f"; {_shown(default)}"
    return f"{described.rstrip('.')} [env CBIR_{setting.upper()}{shown}]."


def _declare(*flags: Flag) -> dict[str, Flag]:
    return {flag.setting: flag for flag in flags}


FLAGS: dict[str, Flag] = _declare(
    Flag("data_dir"),
    Flag("database_url"),
    Flag("encoder"),
    Flag("backbone", help="Backbone network: {backbones}"),
    Flag("head", help="Pooling head: {heads}"),
    Flag("weights"),
    Flag("max_side", help="Resize images so that their long side is this many pixels"),
    Flag("scales"),
    Flag("fitted"),
    Flag("device"),
    Flag("batch_size"),
    Flag("workers"),
    Flag("commit_every"),
    Flag("gpu_decode", ("--gpu-decode/--no-gpu-decode",)),
    Flag("compile", ("--compile/--no-compile",)),
    Flag("query_expansion", ("--qe",), options={"min": 0}),
    Flag("database_augmentation", ("--dba",), options={"min": 0}),
    Flag("nprobe", options={"min": 1, "max": 65536}),
    Flag("ef_search", options={"min": 1, "max": 4096}),
    Flag("duplicate_threshold", ("--threshold",), options={"min": 0.0, "max": 1.0}),
    Flag("index_type", ("--type",)),
    Flag("index_memory_mb", ("--memory-mb",), options={"min": 16}),
    Flag("host", help="Interface to listen on"),
    Flag("port", help="Port to listen on; 0: any free one"),
)

# The bundles commands share.
DATABASE = ("data_dir", "database_url")
ENCODER = ("encoder", "backbone", "head", "weights", "max_side", "scales", "fitted", "device")
BACKBONE = ("backbone", "head", "weights", "max_side", "scales", "device")  # what fitting starts from
RERANK = ("query_expansion", "database_augmentation")
READING = ("batch_size", "workers")


def _names(takes: Iterable[str | tuple[str, ...]]) -> list[str]:
    names: list[str] = []
    for item in takes:
        for name in (item,) if isinstance(item, str) else item:
            if name not in FLAGS:
                raise ValueError(f"no flag for setting {name!r}; known: {', '.join(sorted(FLAGS))}")
            if name not in names:
                names.append(name)
    return names


@dataclass(frozen=True)
class Given:
    """The setting flags a command was given: a value, or None where the environment's stays."""

    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        if name not in self.values:
            raise KeyError(f"{name!r} is not among this command's flags: {', '.join(self.values)}")
        return self.values[name]

    def settings(self) -> Settings:
        """Settings from the environment, with the flags given taking precedence."""
        given = {name: value for name, value in self.values.items() if value is not None}
        try:
            return Settings(**given)
        except ValidationError as exc:
            raise ValueError(invalid_settings_message(exc, set(given))) from exc
        except SettingsError as exc:  # an environment value that is not even parseable (lists want JSON)
            raise ValueError(
                f"{exc}: settings that hold lists take JSON, e.g. CBIR_CORS_ORIGINS='[\"https://example.com\"]'"
            ) from exc


def invalid_settings_message(exc: ValidationError, from_flags: set[str]) -> str:
    """One line per bad setting, naming where it came from (flag or CBIR_ variable) and what it got."""
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        where = "its command-line flag" if name in from_flags else f"CBIR_{name.upper()}"
        problems.append(f"setting {name} ({where}) is {error.get('input')!r}: {error['msg']}")
    return "; ".join(problems) or str(exc)


class RegistryHelp(TyperCommand):
    """Fills a help text's marks (``{heads}``) with what models/ holds when the help is shown."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for param in self.params:
            text = getattr(param, "help", None)
            if isinstance(text, str):
                for mark, names in FROM_MODELS.items():
                    if mark in text:
                        text = text.replace(mark, ", ".join(names()))
                param.help = text  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def command(group: typer.Typer, *takes: str | tuple[str, ...], name: str | None = None) -> Callable[[F], F]:
    """Register the decorated function as a command of ``group`` taking the setting flags ``takes``."""
    names = _names(takes)

    def register(function: F) -> F:
        signature = inspect.signature(function, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in INJECTED]
        shadowing = [p.name for p in own if p.name in Settings.model_fields]
        if shadowing:
            raise TypeError(
                f"{function.__name__}: parameter(s) {', '.join(shadowing)} are named like settings but are "
                "not setting flags: add them to the command's @command(...) flags, or rename them"
            )
        wants = [name for name in INJECTED if name in signature.parameters]
        flags = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=FLAGS[name].annotation
            )
            for name in names
        ]

        @functools.wraps(function)
        def run(**values: Any) -> Any:
            given = Given({name: values.pop(name) for name in names})
            with friendly_errors():
                injected = {"settings": given.settings, "given": lambda: given}
                return function(**values, **{name: injected[name]() for name in wants})

        parameters = [*own, *flags]
        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters} | {
            "return": signature.return_annotation
        }
        group.command(name, cls=RegistryHelp)(run)
        return function

    return register


def group(help: str) -> typer.Typer:
    """A command group as every group of `cbir` is made (help shows defaults as text, not rich markup)."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)
