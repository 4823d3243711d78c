"""The training and evaluation input pipelines (torchdata.nodes) behind a small API.

Graph: ShardSampler (this rank's positions of the epoch) -> ParallelMapper (decode + augment,
thread or process workers, in order) -> Batcher -> Mapper (collate to fixed shapes) ->
PinMemory (when CUDA is available) -> Prefetcher -> Loader.

Every sample's random stream is a function of (seed, epoch, position in the epoch), so batches
do not depend on worker count, worker type or scheduling. Training is one endless stream of
epochs that never drops a sample (NVIDIA v0.7; see :mod:`ssd_data.sampler`), so the resume
state is small and exact: ``{"batches_done", ...}``; resuming restarts the sampler at the next
stream position instead of replaying torchdata snapshots, so a resumed run may even change
num_workers, worker_type or prefetch and still gets the very same batches.
"""

from __future__ import annotations

import gc
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torchdata.nodes import Batcher, Loader, Mapper, ParallelMapper, PinMemory, Prefetcher

from ssd_data.batch import EvalBatch, EvalCollate, TrainBatch
from ssd_data.coco import CocoIndex
from ssd_data.config import DataConfig
from ssd_data.device_path import select_train_path
from ssd_data.device_prefetch import device_batches
from ssd_data.errors import DataError
from ssd_data.sampler import EpochClock, ShardSampler, StreamSampler
from ssd_data.samples import EvalSampleFn, Event

log = logging.getLogger(__name__)
_LOGGED_PER_KIND = 20  # events of one kind logged one by one; after that only counted
_STATE_VERSION = 2  # 2: one endless stream (batches_done over the run); 1: per-epoch


def _require(path: Path | None, name: str) -> Path:
    if path is None:
        raise DataError(
            f"data.{name} is not set: set data.root (a COCO-layout folder) or data.{name}"
        )
    return Path(path)


def _check_dir(path: Path, name: str) -> Path:
    if not path.is_dir():
        raise DataError(f"data.{name} = {path} is not a folder; check data.root / data.{name}")
    return path


def _build_graph(
    sampler: ShardSampler,
    map_fn: Callable[[Any], Any],
    collate: Callable[[Any], Any],
    batch_size: int,
    drop_last: bool,
    cfg: DataConfig,
) -> Loader:
    if cfg.num_workers > 0:
        node = ParallelMapper(
            sampler,
            map_fn,
            num_workers=cfg.num_workers,
            in_order=True,
            method=cfg.worker_type,
            multiprocessing_context=cfg.multiprocessing_context,
        )
    else:
        node = Mapper(sampler, map_fn)
    node = Mapper(Batcher(node, batch_size=batch_size, drop_last=drop_last), collate)
    if cfg.pin_memory and torch.cuda.is_available():
        node = PinMemory(node)
    return Loader(Prefetcher(node, prefetch_factor=cfg.prefetch))


def _shutdown(loader: Loader) -> None:
    """Stop the threads/processes of a torchdata graph (best effort, torchdata internals)."""
    node: Any = loader.root
    while node is not None:
        inner = getattr(node, "_it", None)
        for it in (inner, getattr(inner, "_it", None)):
            stop = getattr(it, "_shutdown", None)
            if callable(stop):
                stop()
        node = getattr(node, "source", None)


def _collect_before_fork(cfg: DataConfig) -> None:
    """Collect garbage before process workers fork: a forked child that garbage-collects an
    inherited, finished torchdata iterator runs its ``__del__`` and prints a spurious
    "can only test a child process" error."""
    if cfg.worker_type == "process" and cfg.num_workers > 0:
        gc.collect()


class _EventLog:
    """Counts sample events and logs the first few of each kind with the file name.

    Counts: ``bad_image`` and ``size_mismatch`` per image, ``dropped_boxes`` per box.
    """

    def __init__(self, what: str, policy_hint: str) -> None:
        self.counts: Counter[str] = Counter()
        self._logged: Counter[str] = Counter()
        self.what, self.policy_hint = what, policy_hint

    def record(self, events: list[Event]) -> None:
        for kind, file, detail in events:
            self.counts[kind] += int(detail) if kind == "dropped_boxes" else 1  # type: ignore[call-overload]
            self._logged[kind] += 1
            if self._logged[kind] > _LOGGED_PER_KIND:
                continue
            if kind == "bad_image":
                log.warning(
                    "unreadable %s image %s (%s): %s", self.what, file, detail, self.policy_hint
                )
            elif kind == "dropped_boxes":
                log.warning(
                    "%s: %s boxes beyond data.max_boxes dropped (raise data.max_boxes)",
                    file,
                    detail,
                )
            else:
                log.warning("%s: image size differs from its annotation: %s", file, detail)
            if self._logged[kind] == _LOGGED_PER_KIND:
                log.warning("further '%s' events of the %s data are only counted", kind, self.what)

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


class TrainLoader:
    """Training batches of one rank: one endless stream of epochs (see :func:`build_train_loader`).

    ``shard_size`` S = ``num_samples // world_size`` images of each epoch per rank (the rest of
    an epoch's permutation is left out, as NVIDIA's reader does); ``batch_size`` B; batch ``b``
    holds this rank's stream samples ``b*B .. b*B + B - 1``, so a batch may straddle two
    epochs, and every epoch is exactly one permutation of the rank's shard. ``batches_done``
    counts the batches yielded over the whole run; ``iter(loader)`` continues there.
    """

    def __init__(
        self,
        cfg: DataConfig,
        index: CocoIndex,
        image_dir: Path,
        rank: int,
        world_size: int,
        seed: int,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.cfg, self.index, self.rank, self.world_size, self.seed = (
            cfg,
            index,
            rank,
            world_size,
            seed,
        )
        self.num_samples = index.num_images
        self.batch_size = cfg.batch_size
        self.shard_size = self.num_samples // world_size
        if self.shard_size < cfg.batch_size:
            raise DataError(
                f"{index.path}: {self.num_samples} training images over world_size {world_size} "
                f"ranks give each rank {self.shard_size} images per epoch, fewer than one batch "
                f"per rank (data.batch_size {cfg.batch_size}); lower data.batch_size or use "
                "fewer ranks"
            )
        self.clock = EpochClock(self.shard_size, cfg.batch_size)
        self._sampler = StreamSampler(self.num_samples, rank, world_size, self.shard_size, seed)
        # data.augment_device: CPU path, or bytes + decisions here and pixels on the device.
        self._map_fn, self._collate, self._augmenter = select_train_path(
            cfg, index, image_dir, seed, device
        )
        self._loader = _build_graph(
            self._sampler, self._map_fn, self._collate, cfg.batch_size, True, cfg
        )
        hint = "replaced by another image (data.bad_image_policy=skip)"
        self._events = _EventLog("training", hint)
        self.batches_done = 0  # batches yielded over the whole run (all epochs)
        self._images = 0
        self._generation = 0  # bumped by every iter(): older iterators stop

    def epoch_start_batch(self, epoch: int) -> int:
        """The 0-based batch at which 0-based ``epoch`` starts: ``ceil(epoch*S / B)``."""
        return self.clock.epoch_start_batch(epoch)

    def epoch_of_batch(self, batch: int) -> int:
        """The 0-based epoch of batch ``batch``'s first image: ``(batch*B) // S``."""
        return self.clock.epoch_of_batch(batch)

    def __iter__(self) -> Iterator[TrainBatch]:
        """Endless batches from batch ``batches_done`` on (the caller stops iterating).

        A new ``iter()`` continues at ``batches_done``: batches prefetched but not consumed
        are discarded and made again (a batch is a pure function of its stream position);
        an older iterator of this loader then stops."""
        self._generation += 1
        start = self.batches_done
        self._sampler.start = start * self.batch_size
        if start:
            log.info(
                "training data continues at batch %d (epoch %d)", start, self.epoch_of_batch(start)
            )
        _collect_before_fork(self.cfg)
        it: Iterator[Any] = iter(self._loader)  # resets the graph now
        if self._augmenter is not None:  # device path: decode + augment one batch ahead
            it = device_batches(it, self._augmenter)
        return self._batches(it, self._generation)

    def _batches(self, it: Iterator[Any], generation: int) -> Iterator[TrainBatch]:
        while generation == self._generation:
            try:
                batch, events = next(it)
            except StopIteration:  # the stream is endless; only a closed loader gets here
                return
            self._events.record(events)
            self.batches_done += 1
            self._images += len(batch.image_ids)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Position in the stream and counters; plain ints (fits any checkpoint format)."""
        return {
            "version": _STATE_VERSION,
            "batches_done": self.batches_done,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "stats": self.stats(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` was taken: the next ``iter()`` yields exactly the batches an
        uninterrupted loader would have yielded after it. The state must come from a loader
        with the same batch size, world size, seed and dataset (image count); otherwise
        :class:`DataError` names what differs."""
        version = state.get("version")
        if version != _STATE_VERSION:
            raise DataError(
                f"the training-data state has version {version!r}, this loader reads version "
                f"{_STATE_VERSION} (one endless stream of epochs); a checkpoint of an older "
                "version cannot be resumed exactly: start a new run"
            )
        differs = [
            f"{key}={state.get(key)} but this run has {key}={mine}"
            for key, mine in (
                ("batch_size", self.batch_size),
                ("world_size", self.world_size),
                ("seed", self.seed),
                ("num_samples", self.num_samples),
            )
            if state.get(key) is None or int(state[key]) != mine
        ]
        if differs:
            raise DataError(
                f"the training-data state was saved with {'; '.join(differs)}: resume with the "
                "same data.batch_size, world size, seed and dataset, or start a new run"
            )
        self.batches_done = int(state["batches_done"])
        stats = state.get("stats", {})
        self._images = int(stats.get("images", 0))
        self._events.counts.clear()
        self._events.counts.update(
            {k: int(v) for k, v in stats.items() if k != "images" and not k.startswith("index_")}
        )

    def stats(self) -> dict[str, int]:
        """Counters: images yielded, bad_image (unreadable files replaced), dropped_boxes
        (beyond max_boxes), size_mismatch, and the annotation parse counts
        (index_dropped_degenerate_boxes, index_clipped_boxes, index_images, ...)."""
        out = {"images": self._images, "bad_image": 0, "dropped_boxes": 0, "size_mismatch": 0}
        out.update(self._events.as_dict())
        out.update({f"index_{k}": v for k, v in self.index.counts.items()})
        return out

    def close(self) -> None:
        """Stop the worker threads/processes now (the stream is endless: call it when done)."""
        _shutdown(self._loader)


class EvalLoader:
    """Evaluation batches of one rank (see :func:`build_eval_loader`)."""

    def __init__(
        self, cfg: DataConfig, index: CocoIndex, image_dir: Path, rank: int, world_size: int
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.cfg, self.index = cfg, index
        self.num_samples = index.num_images
        self._per_rank = len(range(rank, self.num_samples, world_size))
        sampler = ShardSampler(self.num_samples, rank, world_size, self._per_rank, 0, shuffle=False)
        map_fn = EvalSampleFn(
            index=index,
            image_dir=image_dir,
            impl=cfg.augment_impl,
            policy=cfg.bad_image_policy,
            max_pixels=cfg.max_image_pixels,
        )
        self._loader = _build_graph(
            sampler, map_fn, EvalCollate(cfg.channels_last), cfg.eval_batch_size, False, cfg
        )
        self._events = _EventLog(
            "evaluation", "left out of the evaluation (data.bad_image_policy=skip)"
        )

    def __len__(self) -> int:
        """Batches of this rank (the last may be short)."""
        return math.ceil(self._per_rank / self.cfg.eval_batch_size)

    def __iter__(self) -> Iterator[EvalBatch]:
        _collect_before_fork(self.cfg)
        for batch, events in self._loader:
            self._events.record(events)
            if batch is not None:
                yield batch

    def stats(self) -> dict[str, int]:
        """Counters: bad_image (unreadable files left out), size_mismatch."""
        return {"bad_image": 0, "size_mismatch": 0, **self._events.as_dict()}

    def close(self) -> None:
        """Stop the worker threads/processes now."""
        _shutdown(self._loader)


def build_train_loader(
    cfg: DataConfig, rank: int, world_size: int, seed: int, device: torch.device | str = "cpu"
) -> TrainLoader:
    """Training loader of rank ``rank`` of ``world_size``: annotated images of
    ``cfg.train_annotations``, shuffled per epoch from ``seed``, MLPerf augmentation.

    ``for batch in loader`` yields :class:`~ssd_data.batch.TrainBatch` endlessly (epochs of
    ``loader.shard_size`` images per rank, batches straddling epoch boundaries); see
    :class:`TrainLoader` for the clock (``epoch_start_batch``, ``epoch_of_batch``,
    ``batches_done``) and resume; ``loader.num_samples`` is the global image count.

    ``device`` is the training device. With ``cfg.augment_device`` "auto" and a CUDA
    ``device`` (or "cuda"), the loader workers only read JPEG bytes and draw the augmentation
    decisions; decoding and pixel work run on ``device`` one batch ahead on a side stream, and
    the batches come out already on ``device`` (same decisions, boxes and labels as the CPU
    path; :mod:`ssd_data.device_augment`). "cuda" with a CPU ``device`` runs that code on the
    CPU (tests).
    """
    index = _train_index(cfg)
    image_dir = _check_dir(_require(cfg.train_images, "train_images"), "train_images")
    return TrainLoader(cfg, index, image_dir, rank, world_size, seed, device)


def build_eval_loader(cfg: DataConfig, rank: int, world_size: int) -> EvalLoader:
    """Evaluation loader of rank ``rank``: the annotated val images (all of them with
    ``cfg.eval_all_images``) in file order, rank r taking every world_size-th from r."""
    index = _val_index(cfg)
    image_dir = _check_dir(_require(cfg.val_images, "val_images"), "val_images")
    return EvalLoader(cfg, index, image_dir, rank, world_size)


def _train_index(cfg: DataConfig) -> CocoIndex:
    """The training images: the annotated ones of ``cfg.train_annotations``."""
    annotations = _require(cfg.train_annotations, "train_annotations")
    return CocoIndex.from_json(annotations, skip_empty=True, cache=cfg.cache_index)


def _val_index(cfg: DataConfig) -> CocoIndex:
    """The validation images: the annotated ones (all with ``cfg.eval_all_images``)."""
    annotations = _require(cfg.val_annotations, "val_annotations")
    return CocoIndex.from_json(
        annotations, skip_empty=not cfg.eval_all_images, cache=cfg.cache_index
    )


def check_annotation_files(cfg: DataConfig) -> tuple[int, int]:
    """Parse both annotation files as the loaders will (train: annotated images; val: as
    ``cfg.eval_all_images`` says), before anything else is built, so that a broken file is
    reported in seconds. With ``cfg.cache_index`` the parsed form is cached next to each json and
    the loaders read that instead of parsing again.

    Returns (training images, validation images). Raises :class:`~ssd_data.errors.AnnotationError`
    naming the file and the record.
    """
    return _train_index(cfg).num_images, _val_index(cfg).num_images
