"""Weights & Biases logging for rank 0: metrics records, images, one run id per run folder.

The wandb files go to `<run dir>/wandb/`. The run id is created once and kept in
`<run dir>/wandb/run-id.txt`, so a requeued or resumed job continues the same wandb run
(`resume="allow"`). Without credentials (no WANDB_API_KEY, no `wandb login` entry in ~/.netrc)
the 'auto' mode logs offline; `wandb sync <run dir>/wandb/offline-run-*` uploads later.
`WANDB_MODE=disabled` in the environment (the test suite sets it) always wins.
"""

from __future__ import annotations

import netrc
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ssd_train.report.config import WandbConfig

WandbMode = Literal["online", "offline", "disabled"]
RUN_ID_FILE = "run-id.txt"
DEFAULT_HOST = "https://api.wandb.ai"
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
              "disabled": "disabled"}  # fmt: skip


def has_wandb_credentials(env: Mapping[str, str] | None = None) -> bool:
    """True when wandb could authenticate: WANDB_API_KEY / identity token, or a netrc entry."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = Path(env.get("NETRC") or Path.home() / ".netrc").expanduser()
    host = urlsplit(env.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def resolve_wandb_mode(cfg: WandbConfig, env: Mapping[str, str] | None = None) -> WandbMode:
    """disabled (not enabled, or WANDB_MODE=disabled) > explicit mode > WANDB_MODE > credentials."""
    env = os.environ if env is None else env
    from_env = _ENV_MODES.get(env.get("WANDB_MODE", "").strip().lower())
    if not cfg.enabled or from_env == "disabled":
        return "disabled"
    if cfg.mode != "auto":
        return cfg.mode
    if from_env is not None:
        return from_env  # type: ignore[return-value]
    return "online" if has_wandb_credentials(env) else "offline"


def stable_run_id(run_dir: Path) -> str:
    """The wandb run id of this run folder, created on first use and kept in wandb/run-id.txt."""
    path = run_dir / "wandb" / RUN_ID_FILE
    if path.is_file():
        run_id = path.read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[a-z0-9_-]{1,64}", run_id):
            return run_id
        raise ValueError(
            f"{path} holds {run_id!r}, not a wandb run id; delete it to start a new wandb run"
        )
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n", encoding="utf-8")
    return run_id


def flatten_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record as wandb keys: train/loss/total, train/lr, eval/map, eval/stats/AP50,
    eval/per_class_ap/<category name>."""
    kind = record.get("kind", "train")
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "kind" or value is None:
            continue
        if key == "stats" and isinstance(value, list):
            for name, v in zip(_STAT_NAMES, value, strict=False):
                if v is not None:
                    out[f"{kind}/stats/{name}"] = v
        elif isinstance(value, Mapping):
            out.update({f"{kind}/{key}/{k}": v for k, v in value.items() if v is not None})
        elif isinstance(value, int | float | bool):
            out[f"{kind}/{key}"] = value
    return out


_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
               "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # fmt: skip


class WandbLogger:
    """wandb on rank 0 (a no-op elsewhere, or when the resolved mode is 'disabled').

    `log(record)` takes metrics.jsonl records (`kind` train or eval); training values are
    plotted against `train/step`, evaluations against `eval/epoch`, so steps re-run after a
    resume do not collide with wandb's own step counter. `log_table(name, records, epoch)`,
    `log_image(name, path)`, `finish()`.
    """

    def __init__(
        self,
        cfg: WandbConfig,
        *,
        run_dir: Path | str,
        config: Mapping[str, Any] | None = None,
        rank: int = 0,
    ) -> None:
        self.mode: WandbMode = resolve_wandb_mode(cfg) if rank == 0 else "disabled"
        self.run: Any = None
        if self.mode == "disabled":
            return
        import wandb  # imported only when used: it is slow to import

        run_dir = Path(run_dir)
        self.run_id = stable_run_id(run_dir)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=run_dir.name,
            id=self.run_id,
            resume="allow",
            mode=self.mode,
            dir=str(run_dir),
            config=dict(config or {}),
            settings=wandb.Settings(console="off", silent=True),
        )
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        self.run.define_metric("eval/epoch")
        self.run.define_metric("eval/*", step_metric="eval/epoch")

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, record: Mapping[str, Any]) -> None:
        if self.run is not None:
            self.run.log(flatten_record(record))

    def log_table(self, name: str, records: list[Mapping[str, Any]], epoch: int) -> None:
        """A wandb Table ``eval/<name>`` (one row per record, columns the records' keys), plotted
        against ``eval/epoch``; used for the per-category AP table."""
        if self.run is not None and records:
            import wandb

            columns = list(records[0])
            table = wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in records])
            self.run.log({f"eval/{name}": table, "eval/epoch": epoch})

    def log_image(self, name: str, path: Path | str) -> None:
        if self.run is not None and Path(path).is_file():
            import wandb

            self.run.log({f"images/{name}": wandb.Image(str(path))})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
