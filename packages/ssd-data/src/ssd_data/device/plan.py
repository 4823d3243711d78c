"""The batch plan: host-side grouping of a batch's images, shipped with the decisions.

Batched device code needs to know, for each group of images that share the same arithmetic,
which images are in it. The host knows every decision (it drew them), so it sorts the images
once per batch (numpy, no device work) and appends the orders as extra columns of the batch's
decision tensor; the device reads them from the ONE copy of that tensor, and the group sizes
(host ints, shapes of slices) come from the same host values. No sync, a constant number of
operations, whatever the decisions.

Columns after the :data:`~ssd_data.device.samples.NUM_PARAMS` per-image decisions (float32,
whole numbers, exact below 2^24):

- :data:`C_RESIZE_ORDER`: the images whose resize runs the vertical pass first, then the others
  (:func:`ssd_data.device.resize.vertical_first`);
- :data:`C_JITTER_ORDER` + s (s = 0..3): the images sorted by the colour op they apply at step
  s of their jitter order (reference jitter), op 0 first.
"""

from __future__ import annotations

import numpy as np

from ssd_data.device.resize import vertical_first
from ssd_data.device.samples import (
    NUM_PARAMS,
    P_BOTTOM,
    P_LEFT,
    P_ORDER,
    P_RIGHT,
    P_TOP,
)
from ssd_data.samples.loop import OUTPUT_SIZE

C_RESIZE_ORDER = NUM_PARAMS
C_JITTER_ORDER = NUM_PARAMS + 1  # .. + 4: one column per jitter step
NUM_COLUMNS = NUM_PARAMS + 5


def vertical_mask(params: np.ndarray) -> np.ndarray:
    """bool [N]: whether each image's resize runs the vertical pass first (params float32
    [N, >= NUM_PARAMS])."""
    widths = params[:, P_RIGHT] - params[:, P_LEFT]
    heights = params[:, P_BOTTOM] - params[:, P_TOP]
    return np.array(
        [vertical_first(int(w), int(h), OUTPUT_SIZE) for w, h in zip(widths, heights, strict=True)],
        dtype=bool,
    )


def num_vertical(params: np.ndarray) -> int:
    """How many images of the batch resize vertical pass first (the length of the first group
    of :data:`C_RESIZE_ORDER`)."""
    return int(vertical_mask(params).sum())


def jitter_group_sizes(params: np.ndarray) -> list[list[int]]:
    """[step][op]: how many images apply colour op ``op`` at step ``step`` (the groups of
    :data:`C_JITTER_ORDER` + step, in op order)."""
    ops = params[:, P_ORDER : P_ORDER + 4].astype(np.int64)
    return [np.bincount(ops[:, step], minlength=4).tolist() for step in range(4)]


def with_plan(params: np.ndarray) -> np.ndarray:
    """float32 [N, NUM_COLUMNS]: the decisions float32 [N, NUM_PARAMS] (or more columns, which
    are recomputed) followed by the plan columns."""
    out = np.zeros((params.shape[0], NUM_COLUMNS), np.float32)
    out[:, :NUM_PARAMS] = params[:, :NUM_PARAMS]
    out[:, C_RESIZE_ORDER] = np.argsort(~vertical_mask(params), kind="stable")
    ops = params[:, P_ORDER : P_ORDER + 4].astype(np.int64)
    for step in range(4):
        out[:, C_JITTER_ORDER + step] = np.argsort(ops[:, step], kind="stable")
    return out
