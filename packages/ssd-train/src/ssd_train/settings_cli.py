"""``ssd-train --help`` in plain words: the command-line source of the settings with readable
value placeholders (PATH, N, NUMBER instead of ``{Path,None}``), real defaults (never ``default
factory: <lambda>``, never this machine's home folder), no Sphinx markup, and an examples section.

``HelpCliSource`` replaces pydantic-settings' ``CliSettingsSource`` in ``Settings``; only the
text changes, parsing is pydantic-settings' own.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import CliSettingsSource, SettingsError

EXAMPLES = """\
examples:
  the default job (synthetic data, made on first use; any machine, CPU or GPU):
    uv run ssd-train
  COCO 2017 on one GPU (ssd-data download --root /data/coco2017 fetches it):
    uv run ssd-train --config infra/configs/dgxa100.toml --data.root /data/coco2017 \\
        --data.batch-size 114
  8 GPUs on one node:
    uv run torchrun --standalone --nproc_per_node=8 -m ssd_train \\
        --config infra/configs/dgxa100.toml --data.root /data/coco2017
  continue a stopped run from its latest checkpoint (a run prints this command when it ends):
    uv run ssd-train --run-dir runs/20260101-120000
  score exported weights on the validation set:
    uv run ssd-train --mode eval --weights runs/20260101-120000/best.pt \\
        --data.root /data/coco2017

Every setting can also be set in the environment (SSD_DATA__BATCH_SIZE=16: SSD_, then the
dotted name in capitals with __ for each dot) or in a TOML preset (--config FILE); the command
line wins over the environment, which wins over the preset. Boolean settings take
--name / --no-name or --name true|false; None unsets an optional setting (--seed None).
"""

#: Descriptions for settings whose own description is missing or terse ("<section class>.<field>";
#: their sections belong to other packages).
DESCRIPTIONS = {
    "DataConfig.root": (
        "The dataset folder, in COCO layout (train2017/, val2017/, annotations/); unset = the"
        " synthetic dataset of the default job"
    ),
    "DataConfig.train_images": "Folder of the training images; unset = <data.root>/train2017",
    "DataConfig.train_annotations": (
        "COCO-format annotation file of the training images; unset ="
        " <data.root>/annotations/instances_train2017.json"
    ),
    "DataConfig.val_images": "Folder of the validation images; unset = <data.root>/val2017",
    "DataConfig.val_annotations": (
        "COCO-format annotation file of the validation images; unset ="
        " <data.root>/annotations/instances_val2017.json"
    ),
    "EvalConfig.asynchronous": (
        "Score on rank 0 in a separate process while training continues; false: score in the"
        " training process. A scoring process on a CPU-only run would compete with training for"
        " the same cores"
    ),
    "DataConfig.worker_type": (
        "How the data workers run: thread (image decoding releases the GIL) or process"
    ),
}

#: Defaults that depend on the machine, shown in words instead of the field's value.
DEFAULT_TEXTS = {"EvalConfig.asynchronous": "true when training on CUDA, false on a CPU"}

#: Plain descriptions of the option groups (instead of the classes' docstrings).
GROUP_DESCRIPTIONS = {
    "model": "The SSD300 model: classes, backbone weights, detection post-processing.",
    "optim": "SGD with momentum, the optimiser of the MLPerf v0.7 SSD rules.",
    "schedule": "Learning-rate schedule, evaluation schedule and when to stop.",
    "data": (
        "Where the COCO-format data is and how the input pipeline runs. data.root is a folder"
        " with train2017/, val2017/ and annotations/; the four paths below default to their"
        " places under it and may be set on their own. Without data.root the default job's"
        " synthetic dataset is used."
    ),
}

_PLAIN_TYPES = {
    "Path": "PATH",
    "int": "N",
    "float": "NUMBER",
    "str": "TEXT",
    "bool": "true|false",
    "list[int]": "[N,...]",
    "list[float]": "[NUMBER,...]",
    "list[str]": "[TEXT,...]",
}


def plain_metavar(metavar: str) -> str:
    """pydantic-settings' metavar (``{Path,None}``, ``{{a,b},None}``, ``list[int]``) in plain words."""
    text = re.sub(r",None\}$", "}", metavar)
    while text.startswith("{{") and text.endswith("}}"):
        text = text[1:-1]
    if text.startswith("{") and text.endswith("}") and "," not in text:
        text = text[1:-1]
    if text.startswith("{") and text.endswith("}"):
        parts = [_PLAIN_TYPES.get(p, p) for p in text[1:-1].split(",")]
        return "{" + ",".join(parts) + "}"
    return _PLAIN_TYPES.get(text, text.upper() if text.isidentifier() else text)


def plain_text(text: str) -> str:
    """Help text without Sphinx/markdown markup (``x``, :func:`x`, `x`) and this machine's home."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    text = text.replace("``", "")
    text = re.sub(r"`([^`]+)`", r"\1", text)
    return text.replace(str(Path.home()), "~")


def plain_default(value: Any) -> str:
    """A default value as a user types it."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Path):
        return plain_text(str(value))
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return plain_text(str(value))


def _default_of(field_name: str, field_info: FieldInfo, model_default: Any) -> Any:
    if isinstance(model_default, BaseModel):
        return getattr(model_default, field_name, PydanticUndefined)
    if field_info.default is not PydanticUndefined:
        return field_info.default
    factory: Callable[..., Any] | None = field_info.default_factory  # type: ignore[assignment]
    if factory is not None:
        try:
            return factory()  # type: ignore[call-arg]
        except TypeError:  # a factory that takes the validated data: no fixed default
            return PydanticUndefined
    return PydanticUndefined


class HelpParser(argparse.ArgumentParser):
    """The root parser: plain group descriptions and markup-free text, an examples epilog, and
    parse errors raised as ``SettingsError`` (``ssd-train`` prints them as one message)."""

    def error(self, message: str) -> NoReturn:
        raise SettingsError(f"error parsing CLI: {message}")

    def format_help(self) -> str:
        for group in self._action_groups:
            name = (group.title or "").removesuffix(" options")
            if name in GROUP_DESCRIPTIONS:
                group.description = GROUP_DESCRIPTIONS[name]
            elif group.description:
                group.description = " ".join(plain_text(group.description).split())
        return plain_text(super().format_help())


def root_parser(prog: str, description: str) -> HelpParser:
    """The parser ``HelpCliSource`` fills with the settings (it has -h/--help already)."""
    return HelpParser(
        prog=prog,
        description=description,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        add_help=True,
    )


class HelpCliSource(CliSettingsSource):  # type: ignore[type-arg]
    """``CliSettingsSource`` with the plain help text of this module."""

    def _metavar_format(self, obj: Any) -> str:
        raw = super()._metavar_format(obj)
        return raw if raw == "bool" else plain_metavar(raw)  # 'bool' makes --x/--no-x flags

    def _help_format(
        self,
        field_name: str,
        field_info: FieldInfo,
        model_default: Any,
        is_model_suppressed: bool,
        env_var_names: tuple[str, ...] = (),
    ) -> str:
        if isinstance(model_default, type) and issubclass(model_default, BaseModel):
            section = model_default.__name__  # a section whose default factory is its class
        else:
            section = type(model_default).__name__ if isinstance(model_default, BaseModel) else ""
        text = DESCRIPTIONS.get(f"{section}.{field_name}") or field_info.description or ""
        if is_model_suppressed or self._is_field_suppressed(field_info):
            return argparse.SUPPRESS
        text = " ".join(plain_text(text).split())
        default = _default_of(field_name, field_info, model_default)
        if f"{section}.{field_name}" in DEFAULT_TEXTS:
            return f"{text} (default: {DEFAULT_TEXTS[f'{section}.{field_name}']})".replace(
                "%", "%%"
            )
        # an unset default (None) is explained by the description itself
        if default not in (PydanticUndefined, None) and not isinstance(default, BaseModel):
            text = f"{text} (default: {plain_default(default)})" if text else plain_default(default)
        return text.replace("%", "%%")
