"""Settings: precedence CLI > env > TOML preset > defaults, error messages, --help, the CLI exit code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel
from ssd_train.__main__ import main
from ssd_train.settings import Settings, SettingsLoadError, load_settings
from ssd_train.settings_cli import DESCRIPTIONS, plain_text


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SSD_"):
            monkeypatch.delenv(name)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


PRESET = """
[optim]
momentum = 0.5
weight_decay = 1e-3
[data]
batch_size = 5
[schedule]
max_epochs = 7
decay_epochs = [3, 5]
"""


def test_precedence_cli_over_env_over_toml_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = _write(tmp_path / "p.toml", PRESET)
    monkeypatch.setenv("SSD_OPTIM__WEIGHT_DECAY", "2e-3")
    monkeypatch.setenv("SSD_DATA__BATCH_SIZE", "6")
    s = load_settings(["--config", str(preset), "--data.batch-size", "7"])
    assert s.data.batch_size == 7  # CLI beats env and TOML
    assert s.optim.weight_decay == 2e-3  # env beats TOML
    assert s.optim.momentum == 0.5  # TOML beats the default 0.9
    assert s.schedule.max_epochs == 7 and s.schedule.decay_epochs == [3, 5]
    defaults = load_settings([])
    # untouched fields keep their defaults, also inside sections the sources changed
    assert s.data.max_boxes == defaults.data.max_boxes
    assert s.data.num_workers == defaults.data.num_workers
    assert s.optim.lr_per_32 == defaults.optim.lr_per_32
    assert defaults.optim.momentum == 0.9 and defaults.config is None


def test_preset_from_environment_and_equals_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preset = _write(tmp_path / "p.toml", PRESET)
    monkeypatch.setenv("SSD_CONFIG", str(preset))
    assert load_settings([]).optim.momentum == 0.5
    monkeypatch.delenv("SSD_CONFIG")
    assert load_settings([f"--config={preset}"]).data.batch_size == 5


def test_snake_case_and_kebab_case_options_are_both_accepted() -> None:
    assert load_settings(["--data.batch_size", "3"]).data.batch_size == 3
    assert load_settings(["--run_dir", "x"]).run_dir == Path("x")
    s = load_settings(
        ["--schedule.eval-epochs", "[4,6]", "--no-channels-last", "--compile", "false"]
    )
    assert s.schedule.eval_epochs == [4, 6] and s.channels_last is False and s.compile is False
    s = load_settings(
        ["--checkpoint.at-eval-epochs", "false", "--data.pin_memory=no", "--logging.plots", "true"]
    )
    assert (
        s.checkpoint.at_eval_epochs is False
        and s.data.pin_memory is False
        and s.logging.plots is True
    )
    with pytest.raises(
        SettingsLoadError, match="'channels-last' = 'maybe': expected true or false"
    ):
        load_settings(["--channels-last=maybe"])


def test_bad_cli_value_names_the_setting_and_reason() -> None:
    with pytest.raises(SettingsLoadError) as err:
        load_settings(["--optim.lr-per-32", "-1"])
    text = str(err.value)
    assert "optim.lr_per_32" in text and "greater than 0" in text
    assert "--optim.lr-per-32" in text and "SSD_OPTIM__LR_PER_32" in text


def test_bad_env_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSD_SCHEDULE__MAX_EPOCHS", "many")
    with pytest.raises(SettingsLoadError, match=r"schedule\.max_epochs.*'many'"):
        load_settings([])


def test_unknown_setting_in_preset_is_named(tmp_path: Path) -> None:
    preset = _write(tmp_path / "p.toml", "[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(SettingsLoadError, match=r"unknown setting 'optim\.learning_rate'"):
        load_settings(["--config", str(preset)])


def test_cross_field_error_names_the_section(tmp_path: Path) -> None:
    preset = _write(tmp_path / "p.toml", "[schedule]\ndecay_epochs = [55, 44]\n")
    with pytest.raises(
        SettingsLoadError, match=r"'schedule'.*decay_epochs must be strictly increasing"
    ):
        load_settings(["--config", str(preset)])


def test_missing_or_broken_preset_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsLoadError, match=r"nope\.toml does not exist"):
        load_settings(["--config", str(tmp_path / "nope.toml")])
    broken = _write(tmp_path / "broken.toml", "[optim\nmomentum = 1\n")
    with pytest.raises(SettingsLoadError, match=r"broken\.toml is not valid TOML"):
        load_settings(["--config", str(broken)])


def test_unknown_cli_option_is_reported() -> None:
    with pytest.raises(SettingsLoadError, match="unrecognized arguments: --no-such-thing"):
        load_settings(["--no-such-thing", "1"])


def _leaf_options(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _leaf_options(ann, f"{prefix}{name}.")
        else:
            out.append((f"--{prefix}{field.alias or name}".replace("_", "-"), field.description))
    return out


def test_help_lists_every_setting_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        load_settings(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    options = _leaf_options(Settings)
    assert len(options) > 60
    for option, description in options:
        assert option in text, option
        section = option[2:].split(".")[0]
        overridden = any(k.split(".")[1] == option.split(".")[-1].replace("-", "_")
                         for k in DESCRIPTIONS if section == "data")  # fmt: skip
        if description and not overridden:
            assert " ".join(plain_text(description).split())[:40] in text, option


def _help_text(capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        load_settings(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _described_options(raw: str) -> dict[str, str]:
    """Option -> its help text, from the options part of --help (after the usage lines)."""
    out: dict[str, str] = {}
    current = None
    in_group_text = False
    for line in raw.split("\noptions:\n", 1)[1].split("\nexamples:\n", 1)[0].splitlines():
        if line.endswith(" options:"):  # a group's title, then its description up to a blank line
            in_group_text, current = True, None
        elif not line.strip():
            in_group_text = False
        elif in_group_text:
            continue
        elif line.startswith("  --"):
            head, _, rest = line.strip().partition("  ")
            current = head.split(",")[0].split()[0]
            out[current] = rest.strip()
        elif line.startswith(" " * 10) and current is not None:
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def test_help_is_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _help_text(capsys)
    text = " ".join(raw.split())
    for internal in ("{Path", ",None}", "{int", "{str", "list[int]", "default factory", "lambda",
                     "``", ":func:", ":class:", ":meth:", "`", str(Path.home())):  # fmt: skip
        assert internal not in text, internal
    # every setting has a description, data.root included
    described = _described_options(raw)
    for option, _ in _leaf_options(Settings):
        assert len(described[option].split()) >= 3, (option, described[option])
    assert "--data.root PATH The dataset folder, in COCO layout" in text
    assert (
        "(default: ~/.cache/ssd-mlperf)" in text
    )  # the synthetic cache, not /root/... or /home/...
    assert "--channels-last, --no-channels-last" in text  # booleans stay flags
    assert "--schedule.max-steps N" in text
    # the default job's batch size, not DataConfig's own default (32)
    batch = load_settings([]).data.batch_size
    assert f"--data.batch-size N training images per step and rank (default: {batch})" in text
    # a machine-dependent default is said in words, from the section's own description override
    assert (
        "false: score in the training process. A scoring process on a CPU-only run would compete"
        " with training for the same cores (default: true when training on CUDA, false on a CPU)"
    ) in text


def test_scoring_process_only_on_cuda_unless_set() -> None:
    """eval.asynchronous unset: a scoring process when training on CUDA, none on a CPU; a value
    given on the command line or in a preset is kept on either device."""
    import torch
    from ssd_train.validation import scoring_config

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    unset = load_settings([]).eval
    assert scoring_config(unset, cpu).asynchronous is False
    assert scoring_config(unset, cuda).asynchronous is True
    assert scoring_config(load_settings(["--eval.asynchronous"]).eval, cpu).asynchronous is True
    assert (
        scoring_config(load_settings(["--no-eval.asynchronous"]).eval, cuda).asynchronous is False
    )


def test_help_has_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _help_text(capsys)
    examples = raw.split("\nexamples:\n", 1)[1]
    commands = [line.strip() for line in examples.splitlines() if line.startswith("    uv run")]
    assert commands[0] == "uv run ssd-train"  # the default job
    assert any("--data.root" in c and "torchrun" not in c for c in commands)  # COCO, one GPU
    assert any("torchrun" in c and "nproc_per_node=8" in c for c in commands)  # 8 GPUs
    assert any(c.startswith("uv run ssd-train --run-dir") for c in commands)  # resume
    assert any("--mode eval --weights" in c for c in commands)  # evaluation
    # the presets named there exist
    root = Path(__file__).resolve().parents[2]
    for preset in {w for c in commands for w in c.split() if w.endswith(".toml")}:
        assert (root / preset).is_file(), preset


def test_help_parses_its_own_examples() -> None:
    """The settings of the examples' command lines resolve (no data needed to parse them)."""
    s = load_settings(["--run-dir", "runs/x", "--mode", "eval", "--weights", "w.pt"])
    assert s.mode == "eval" and s.weights == Path("w.pt") and s.run_dir == Path("runs/x")
    assert load_settings(["--seed", "None"]).seed is None  # as the epilog says


def test_main_reports_bad_settings_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--optim.momentum", "2"]) == 2
    err = capsys.readouterr().err
    assert "optim.momentum" in err and "less than 1" in err and "Traceback" not in err
