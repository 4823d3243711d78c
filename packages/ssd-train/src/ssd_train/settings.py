"""Root settings of ``ssd-train``: the packages' config sections composed with pydantic-settings.

Sources, highest priority first: command line (``--optim.lr-per-32 0.04``) > environment
(``SSD_OPTIM__LR_PER_32=0.04``; ``SSD_`` prefix, ``__`` between nesting levels) > TOML preset
(``--config infra/configs/dgxa100.toml`` or ``SSD_CONFIG``) > defaults (the CPU default job on the
synthetic dataset). ``ssd-train --help`` lists every setting with its description.
:func:`load_settings` turns validation errors into :class:`SettingsLoadError` messages that name
the setting, the reason, and the three ways to set it.
"""

from __future__ import annotations

import contextvars
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from ssd_core import ModelConfig
from ssd_data import DataConfig
from ssd_eval import EvalConfig

from ssd_train.checkpoint.config import CheckpointConfig
from ssd_train.report.config import LoggingConfig
from ssd_train.resilience.config import ResilienceConfig
from ssd_train.settings_cli import HelpCliSource, root_parser
from ssd_train.trainer_config import (
    BenchmarkConfig,
    DistributedConfig,
    OptimConfig,
    ScheduleConfig,
    SyntheticConfig,
    subsection,
)

ENV_PREFIX = "SSD_"
CONFIG_ENV = "SSD_CONFIG"

_SOURCES: contextvars.ContextVar[tuple[list[str], Path | None]] = contextvars.ContextVar(
    "ssd_train_settings_sources", default=([], None)
)


class SettingsLoadError(ValueError):
    """Settings could not be resolved; the message says which setting, why, and how to set it."""


class Settings(BaseSettings):
    """ssd-train: MLPerf v0.7 SSD300-ResNet34 training, benchmark and evaluation."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
        extra="forbid",
        cli_prog_name="ssd-train",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_avoid_json=True,
        cli_exit_on_error=False,
        cli_use_class_docs_for_groups=True,
        validate_default=True,
    )

    config: Path | None = Field(
        None,
        description=f"TOML preset with settings (e.g. infra/configs/dgxa100.toml); env {CONFIG_ENV}.",
    )
    mode: Literal["train", "benchmark", "eval"] = Field(
        "train",
        description="train: the training run; benchmark: time the train step on synthetic tensors;"
        " eval: score --weights on the validation set.",
    )
    run_dir: Path | None = Field(
        None,
        description="Run folder (config.json, mlperf.log, metrics, checkpoints); default runs/<UTC time>.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        description="Global seed (None = random); broadcast from rank 0, rank r uses seed + r.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = cuda:<local rank> when CUDA is available, else cpu."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Autocast dtype of forward and loss; auto = bf16 on CUDA and on CPUs with bf16 instructions"
        " (AVX512-BF16, AMX), else fp32.",
    )
    channels_last: bool = Field(
        True, description="Use the channels_last memory format for images and model."
    )
    compile: bool | None = Field(
        None,
        description="torch.compile the train step (--compile true|false); None = on for CUDA, off on CPU.",
    )
    compile_mode: Literal["default", "max-autotune-no-cudagraphs", "reduce-overhead"] = Field(
        "default",
        description="How --compile true compiles the step: default = fused kernels; max-autotune-no-cudagraphs"
        " = also tries several kernel variants and keeps the fastest (slower start); reduce-overhead ="
        " also replays each step as recorded CUDA graphs, which cuts kernel-launch cost (CUDA only).",
    )
    compile_backend: Literal["inductor", "aot_eager", "eager"] = Field(
        "inductor",
        description="The torch.compile backend: inductor generates fused kernels; aot_eager and eager"
        " capture the same graphs without generating kernels (quick checks for graph breaks).",
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per process (None = torch's default)."
    )
    weights: Path | None = Field(
        None,
        description="--mode eval: a checkpoint folder (checkpoints/step-N) or exported weights (.pt).",
    )
    model: ModelConfig = subsection(ModelConfig, "Model (ssd_core).")
    data: DataConfig = subsection(DataConfig, "Data pipeline (ssd_data).")
    eval: EvalConfig = subsection(EvalConfig, "Evaluation (ssd_eval).")
    optim: OptimConfig = subsection(OptimConfig, "Optimiser.")
    schedule: ScheduleConfig = subsection(ScheduleConfig, "LR and eval schedule.")
    checkpoint: CheckpointConfig = subsection(CheckpointConfig, "Checkpoints.")
    resilience: ResilienceConfig = subsection(
        ResilienceConfig, "Preemption, watchdog, non-finite loss."
    )
    logging: LoggingConfig = subsection(LoggingConfig, "Logging.")
    distributed: DistributedConfig = subsection(DistributedConfig, "Distribution.")
    benchmark: BenchmarkConfig = subsection(BenchmarkConfig, "Benchmark mode.")
    synthetic: SyntheticConfig = subsection(SyntheticConfig, "Synthetic dataset.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        argv, toml_path = _SOURCES.get()
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            HelpCliSource(
                settings_cls,
                cli_parse_args=argv,
                root_parser=root_parser("ssd-train", (cls.__doc__ or "").strip()),
            ),
            env_settings,
        ]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="before")
    @classmethod
    def _zero_steps_means_off(cls, data: Any) -> Any:
        """``checkpoint.every_steps = 0`` turns periodic saves off (TOML has no null)."""
        if isinstance(data, dict) and isinstance(data.get("checkpoint"), dict):
            ck = data["checkpoint"]
            if str(ck.get("every_steps", "")).strip() == "0":
                data = {**data, "checkpoint": {**ck, "every_steps": None}}
        return data

    def global_batch_size(self, world_size: int) -> int:
        """Images per optimiser step over all ranks."""
        return self.data.batch_size * world_size * self.optim.grad_accumulation_steps

    def base_learning_rate(self, world_size: int) -> float:
        """The run's base LR: ``optim.lr_per_32`` scaled to :meth:`global_batch_size` by NVIDIA's
        rule (``lr_schedule.base_learning_rate``)."""
        from ssd_train.lr_schedule import base_learning_rate

        return base_learning_rate(self.optim.lr_per_32, self.global_batch_size(world_size))


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _bool_options(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Kebab-case names of the boolean settings (``data.pin-memory`` ...)."""
    out: set[str] = set()
    for name, field in (model or Settings).model_fields.items():
        ann = field.annotation
        dotted = f"{prefix}{name}".replace("_", "-")
        if ann is bool:
            out.add(dotted)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _bool_options(ann, dotted + ".")
    return out


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """Accept ``--run_dir`` as well as ``--run-dir`` (settings are kebab-case on the command line),
    and ``--flag true|false`` / ``--flag=false`` as well as ``--flag`` / ``--no-flag``."""
    bools = _bool_options()
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--") or len(arg) == 2:
            out.append(arg)
            continue
        name, sep, value = arg[2:].partition("=")
        name = name.replace("_", "-")
        if name in bools:
            if not sep and i < len(args) and args[i].lower() in (*_TRUE, *_FALSE):
                value, sep, i = args[i], "=", i + 1
            if sep:
                if value.lower() not in (*_TRUE, *_FALSE):
                    raise SettingsLoadError(
                        f"invalid setting '{name}' = {value!r}: expected true or false"
                    )
                out.append(f"--{name}" if value.lower() in _TRUE else f"--no-{name}")
                continue
        out.append("--" + name + sep + value)
    return out


def _config_path(argv: Sequence[str]) -> Path | None:
    """The TOML preset named by ``--config`` (last one wins) or ``SSD_CONFIG``."""
    path: str | None = os.environ.get(CONFIG_ENV) or None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None or path.lower() in ("", "none", "null"):
        return None
    return Path(path)


def _check_toml(path: Path) -> None:
    if not path.is_file():
        raise SettingsLoadError(
            f"config file {path} does not exist (given by --config or {CONFIG_ENV}); presets live in infra/configs/"
        )
    try:
        with path.open("rb") as f:
            tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SettingsLoadError(f"config file {path} is not valid TOML: {e}") from None


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # drop pydantic's union/validator tags, keep field names and list indices
    fields = [p for p in loc if not p.startswith("function-") and "[" not in p]
    dotted = ".".join(fields) or "<root>"
    top = [p for p in fields if not p.isdigit()]
    cli = "--" + ".".join(p.replace("_", "-") for p in top)
    env = ENV_PREFIX + "__".join(p.upper() for p in top)
    value = error.get("input")
    shown = "" if error["type"] in ("missing", "extra_forbidden") else f" = {value!r}"
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{dotted}' (see ssd-train --help for the valid names)"
    return f"invalid setting '{dotted}'{shown}: {error['msg']} (set it with {cli}, {env}, or the TOML preset)"


def load_settings(argv: Sequence[str] | None = None) -> Settings:
    """Resolve settings from the command line ``argv`` (default: none), environment, TOML preset, defaults.

    Raises:
        SettingsLoadError: a bad value, unknown setting, unreadable preset or malformed command line;
            the message names the setting and the reason.
        SystemExit: ``--help`` (exit code 0).
    """
    args = _normalise_argv(list(argv or []))
    toml_path = _config_path(args)
    if toml_path is not None:
        _check_toml(toml_path)
    token = _SOURCES.set((args, toml_path))
    try:
        return Settings()
    except ValidationError as e:
        lines = [_describe(err) for err in e.errors()]
        raise SettingsLoadError("\n".join(lines)) from None
    except SettingsError as e:
        raise SettingsLoadError(str(e)) from None
    finally:
        _SOURCES.reset(token)


def settings_json(settings: Settings) -> str:
    """The resolved settings as JSON (written to <run dir>/config.json)."""
    return settings.model_dump_json(indent=2)
