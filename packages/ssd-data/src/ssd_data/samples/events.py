"""Counting and logging what happened to samples (``Event`` tuples of :mod:`ssd_data.samples.loop`)
in the main process, as batches are consumed: the first few of each kind by file name, the rest
only counted."""

from __future__ import annotations

import logging
from collections import Counter

from ssd_data.samples.loop import Event

log = logging.getLogger("ssd_data.pipeline")
_LOGGED_PER_KIND = 20  # events of one kind logged one by one; after that only counted


class EventLog:
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
