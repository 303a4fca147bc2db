"""The CLI's setting flags: help taken from the settings and the registries, and mistakes that fail loudly."""

from __future__ import annotations

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from app.cli import app
from app.cli.options import ENCODER, FLAGS, Given, command, flag_help
from app.config import Settings
from models.backbones import available_backbones
from models.heads import available_heads

runner = CliRunner()


def help_text(*args: str) -> str:
    """A command's --help with its line wrapping undone."""
    shown = runner.invoke(app, [*args, "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    return " ".join(shown.output.split())


def commands_with(flag: str) -> list[list[str]]:
    """Every command (as its words on the command line) that takes the setting flag ``flag``."""
    found = []
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)

    def walk(group: TyperGroup, words: list[str]) -> None:
        for name, sub in group.commands.items():
            if isinstance(sub, TyperGroup):
                walk(sub, [*words, name])
            elif any(param.name == flag for param in sub.params):
                found.append([*words, name])

    walk(root, [])
    return found


@pytest.mark.parametrize("head", available_heads())
def test_the_head_help_lists_every_registered_head(head: str) -> None:
    assert f"Pooling head: {', '.join(available_heads())} [env CBIR_HEAD; gap]" in help_text("index")
    assert head in help_text("search")


@pytest.mark.parametrize("backbone", available_backbones())
def test_the_backbone_help_lists_every_registered_backbone(backbone: str) -> None:
    assert backbone in help_text("fit")


@pytest.mark.parametrize("setting", sorted(FLAGS))
def test_each_flag_helps_with_its_settings_description(setting: str) -> None:
    described = FLAGS[setting].help or Settings.model_fields[setting].description
    assert described
    users = commands_with(setting)
    assert users, f"no command takes --{setting}: drop its flag"
    shown = help_text(*users[0])
    words = described.rstrip(".").split("{")[0].strip()  # a registry's names are filled in
    assert words in shown and f"env CBIR_{setting.upper()}" in shown


def test_the_batch_size_help_says_what_the_encoder_does() -> None:
    from models import build_encoder
    from models.defaults import CPU_BATCH, CUDA_BATCH

    shown = help_text("index")
    assert f"default by device: {CPU_BATCH} on CPU, {CUDA_BATCH} on CUDA" in shown
    encoder = build_encoder(backbone="tiny_random", max_side=64, device="cpu")
    assert encoder.batch_size == CPU_BATCH  # what the encoder really takes on this CPU


def test_a_flag_for_no_setting_is_refused_at_import() -> None:
    group = typer.Typer()
    with pytest.raises(ValueError, match=r"no flag for setting 'batch_sise'; known: .*batch_size"):
        command(group, "batch_sise")
    with pytest.raises(ValueError, match="no setting"):
        flag_help("batch_sise")


def test_a_parameter_named_like_a_setting_must_be_its_flag() -> None:
    group = typer.Typer()
    with pytest.raises(TypeError, match="workers are named like settings but are not setting flags"):

        @command(group, ENCODER)
        def index(settings: Settings, workers: int = 2) -> None:
            """Would silently not set the setting `workers`."""


def test_a_command_reads_the_flags_it_declared_only() -> None:
    given = Given({"head": "gem", "device": None})
    assert given["head"] == "gem" and given["device"] is None
    with pytest.raises(KeyError, match="'nprobe' is not among this command's flags: head, device"):
        given["nprobe"]
    settings = given.settings()
    assert settings.head == "gem" and settings.device == Settings().device


def test_a_flag_given_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CBIR_HEAD", "mac")
    assert Given({"head": None}).settings().head == "mac"
    assert Given({"head": "gem"}).settings().head == "gem"
